import math

import pytest
import torch

from trainer_core.samplers import SOLVER_NFE, SOLVERS, get_solver, sigma_grid, solve

MU, STD = 0.5, 0.3


def gaussian_velocity(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Exact rectified-flow velocity for data ~ N(MU, STD^2): (z - E[x0 | z_t]) / t."""
    t = t.view(-1, *([1] * (z.dim() - 1)))
    a = 1 - t
    x0 = MU + a * STD**2 / (a**2 * STD**2 + t**2) * (z - a * MU)
    return (z - x0) / t


@pytest.fixture
def noise() -> torch.Tensor:
    return torch.randn(8, 3, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def _error(solver: str, steps: int, noise: torch.Tensor) -> float:
    # The exact ODE map of a Gaussian sends eps to MU + STD * eps.
    return float((solve(gaussian_velocity, noise, steps, solver) - (MU + STD * noise)).abs().max())


@pytest.mark.parametrize("solver", sorted(SOLVERS))
def test_solvers_converge_to_the_exact_flow_map(solver, noise):
    errors = [_error(solver, k, noise) for k in (8, 32, 128)]
    assert errors[2] < errors[0] / 8
    assert errors[2] < (2e-2 if solver == "euler" else 5e-3)


def test_euler_is_first_order_and_heun_second(noise):
    euler_ratio = _error("euler", 16, noise) / _error("euler", 32, noise)
    heun_ratio = _error("heun", 16, noise) / _error("heun", 32, noise)
    assert 1.6 < euler_ratio < 2.5
    assert heun_ratio > 3.2


def test_sigma_grid_runs_from_noise_to_data_and_shifts_toward_noise():
    grid = sigma_grid(10)
    assert grid[0] == 1 and grid[-1] == 0 and torch.all(grid[1:] < grid[:-1])
    shifted = sigma_grid(10, shift=3.0)
    assert shifted[0] == 1 and shifted[-1] == 0
    assert torch.all(shifted[1:-1] > grid[1:-1])
    assert math.isclose(float(shifted[5]), 3 * 0.5 / (1 + 2 * 0.5))


def test_nfe_counts_match_model_calls(noise):
    for name, nfe in SOLVER_NFE.items():
        calls = 0

        def counting(z, t):
            nonlocal calls
            calls += 1
            return gaussian_velocity(z, t)

        solve(counting, noise, 6, name)
        assert calls == nfe(6), name


def test_unknown_solver_is_refused():
    with pytest.raises(ValueError, match="solver: must be one of"):
        get_solver("ddim")
    with pytest.raises(ValueError, match="steps: must be at least 1"):
        sigma_grid(0)
