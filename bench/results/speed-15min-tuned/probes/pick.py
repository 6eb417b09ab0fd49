"""Pick each baseline's config for the tuned run: the probe (seed 0) against the preset's seed-0 run
in speed-15min, by mean held-out accuracy over marks 1-10 (area under the accuracy curve)."""
import json, shutil, sys
base = json.load(open("bench/results/speed-15min/speed.json"))
out = "bench/results/speed-15min-tuned"
choice = {}
for method, probe_cfg, probe_json, preset in [
    ("flow-grpo", "flow-grpo-lr5e-4.yaml", "bench/results/speed-15min-tuned/probes/flow-grpo-lr5e-4-seed0.json", "trainer_core/presets/shapes-geneval-flow-grpo.yaml"),
    ("mix-grpo", "mix-grpo-lr2.5e-4.yaml", "bench/results/speed-15min-tuned/probes/mix-grpo-lr2.5e-4-seed0.json", "trainer_core/presets/shapes-geneval-mix-grpo.yaml"),
]:
    run0 = next(r for r in base["methods"][method]["runs"] if r["seed"] == 0)
    preset_auc = sum(s["accuracy"] for s in run0["snapshots"] if s["mark"] > 0) / 10
    probe = json.load(open(probe_json))
    probe_auc = sum(s["accuracy"] for s in probe["snapshots"] if s["mark"] > 0) / 10
    pick = f"{out}/{probe_cfg}" if probe_auc > preset_auc else preset
    print(method, "preset", round(preset_auc, 4), "probe", round(probe_auc, 4), "->", pick, flush=True)
    choice[method] = pick
print(" ".join(f"--config {m}={p}" for m, p in choice.items()))
