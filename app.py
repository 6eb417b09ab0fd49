"""V-GRPO Studio in the browser: `python app.py` (or `make run`), then open http://127.0.0.1:7860.

Starts the Gradio app and an in-process job scheduler; every training job runs in its own worker
process, so nothing the UI does waits on training and a crashing job never takes the app down.
"""

from __future__ import annotations

import argparse
import sys

from storage.data_dir import DataDir
from studio.logs import LEVELS
from studio.logs import configure as configure_logging


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="V-GRPO Studio web app")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--data-dir", help="data directory (env VGRPO_HOME, default ./studio_data)")
    parser.add_argument("--db-url", help="database URL (default: SQLite studio.db in the data directory)")
    parser.add_argument("--auth", help="require a login, as user:password")
    parser.add_argument(
        "--devices",
        help="devices this app's own worker runs jobs on: cpu, cpu:N, cuda, cuda:0,1,... (default: every visible GPU, "
        "else cpu), or none to run no jobs here (workers on other hosts do, sharing --db-url)",
    )
    parser.add_argument("--jobs-per-device", type=int, default=1, help="jobs that may share one device (default 1)")
    parser.add_argument("--max-concurrent-jobs", type=int, help="a cap on jobs run at once besides the devices")
    parser.add_argument("--log-level", default="warning", choices=LEVELS, help="what the terminal shows (warning)")
    args = parser.parse_args(argv)
    if args.auth is not None and (":" not in args.auth or not all(args.auth.split(":", 1))):
        parser.error("--auth: expected user:password")
    if args.max_concurrent_jobs is not None and args.max_concurrent_jobs < 1:
        parser.error("--max-concurrent-jobs: must be at least 1")
    if args.devices is not None and args.devices.strip().lower() != "none":
        from studio.devices import DeviceError, parse_devices

        try:
            parse_devices(args.devices)
        except DeviceError as error:
            parser.error(str(error))
    if not 0 < args.port < 65536:
        parser.error("--port: must be between 1 and 65535")
    return args


LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def exposure_warning(host: str, auth: str | None) -> str:
    """What to say when the app listens beyond this machine without a login ("" when it does not)."""
    if auth or host in LOCAL_HOSTS:
        return ""
    return (
        f"warning: listening on {host} without --auth: anyone who can reach this machine on the network can "
        "start and cancel jobs, label, and export LoRAs; pass --auth user:password"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(args.log_level)
    if warning := exposure_warning(args.host, args.auth):
        print(warning, file=sys.stderr, flush=True)
    from studio.api import Studio
    from studio.scheduler import JobScheduler
    from ui.app import CSS, HEAD, build_app

    data_dir = DataDir(args.data_dir).create()
    studio = Studio(data_dir, args.db_url, inference="worker")  # the web process loads no model
    scheduler = None
    if (args.devices or "").strip().lower() != "none":
        from studio.devices import parse_devices

        devices = parse_devices(args.devices) if args.devices else None
        jobs = args.max_concurrent_jobs
        scheduler = JobScheduler(
            studio.jobs.db.url, data_dir, jobs, devices=devices, jobs_per_device=args.jobs_per_device
        ).start()
    auth = tuple(args.auth.split(":", 1)) if args.auth else None
    print(f"V-GRPO Studio: data in {data_dir.root}; open http://{args.host}:{args.port}", flush=True)
    try:
        build_app(studio).queue().launch(
            server_name=args.host, server_port=args.port, auth=auth, css=CSS, head=HEAD, show_error=True, quiet=True
        )
    finally:
        if scheduler is not None:
            scheduler.shutdown()  # running jobs keep running in their own processes
    return 0


if __name__ == "__main__":
    sys.exit(main())
