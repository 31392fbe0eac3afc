"""Known-answer tests: hand-built small models whose maps, Jacobians and codes are computed by hand."""

from __future__ import annotations

import pytest
import torch

from dsrecon.models import build

D = torch.float64


def set_params(model, **values):
    with torch.no_grad():
        for k, v in values.items():
            getattr(model, k).copy_(torch.as_tensor(v, dtype=D))
    return model


@pytest.fixture
def plrnn2():
    """A = diag(0.5, 0.8), W = [[0, 1], [-2, 0]], h = (0.1, -0.2); the stored diagonal of W is junk
    that the model must ignore."""
    m = build("plrnn", obs_dim=1, latent_dim=2, dtype=D)
    return set_params(m, A=[0.5, 0.8], W=[[9.0, 1.0], [-2.0, 7.0]], h=[0.1, -0.2])


def test_plrnn_2d_step_and_jacobian_by_hand(plrnn2):
    z = torch.tensor([[1.0, -1.0], [-1.0, 2.0], [2.0, 3.0], [-1.0, -1.0]], dtype=D)
    # z' = A z + W relu(z) + h, worked out by hand
    expected = torch.tensor([[0.6, -3.0], [1.6, 1.4], [4.1, -1.8], [-0.4, -1.0]], dtype=D)
    torch.testing.assert_close(plrnn2.step(z), expected)
    J = plrnn2.jacobian(z)
    torch.testing.assert_close(J[0], torch.tensor([[0.5, 0.0], [-2.0, 0.8]], dtype=D))
    torch.testing.assert_close(J[1], torch.tensor([[0.5, 1.0], [0.0, 0.8]], dtype=D))
    torch.testing.assert_close(J[2], torch.tensor([[0.5, 1.0], [-2.0, 0.8]], dtype=D))
    torch.testing.assert_close(J[3], torch.tensor([[0.5, 0.0], [0.0, 0.8]], dtype=D))
    assert plrnn2.region_code(z).tolist() == [[True, False], [False, True], [True, True], [False, False]]


def test_plrnn_2d_affine_piece_and_fixed_point(plrnn2):
    W, h = plrnn2.affine_piece(torch.tensor([True, True]))
    torch.testing.assert_close(W, torch.tensor([[0.5, 1.0], [-2.0, 0.8]], dtype=D))
    torch.testing.assert_close(h, torch.tensor([0.1, -0.2], dtype=D))
    # region (F, F): z' = A z + h, fixed point z* = h / (1 - A) = (0.2, -1); z1 > 0 so it is virtual
    W, h = plrnn2.affine_piece(torch.tensor([False, False]))
    zstar = torch.linalg.solve(torch.eye(2, dtype=D) - W, h)
    torch.testing.assert_close(zstar, torch.tensor([0.2, -1.0], dtype=D))
    assert plrnn2.region_code(zstar[None]).tolist() == [[True, False]]
    # region (T, F): z' = [[0.5, 0], [-2, 0.8]] z + h; z* = (0.2, (-0.2 - 0.4) / 0.2) = (0.2, -3): real
    W, h = plrnn2.affine_piece(torch.tensor([True, False]))
    zstar = torch.linalg.solve(torch.eye(2, dtype=D) - W, h)
    torch.testing.assert_close(zstar, torch.tensor([0.2, -3.0], dtype=D))
    torch.testing.assert_close(plrnn2.step(zstar[None])[0], zstar)


def test_mean_centred_plrnn_by_hand():
    m = build("plrnn", obs_dim=1, latent_dim=2, mean_centered=True, dtype=D)
    set_params(m, A=[0.5, 0.8], W=[[0.0, 1.0], [-2.0, 0.0]], h=[0.1, -0.2])
    z = torch.tensor([[3.0, 1.0]], dtype=D)  # mean 2, u = (1, -1), relu(u) = (1, 0)
    torch.testing.assert_close(m.step(z), torch.tensor([[1.5 + 0.1, 0.8 - 2.0 - 0.2]], dtype=D))
    assert m.region_code(z).tolist() == [[True, False]]
    # J = diag(A) + W diag(1, 0) (I - 11^T / 2) = diag(A) + [[0, 0], [-2, 0]] @ [[.5, -.5], [-.5, .5]]
    torch.testing.assert_close(m.jacobian(z)[0], torch.tensor([[0.5, 0.0], [-1.0, 1.8]], dtype=D))


def test_alrnn_by_hand():
    m = build("alrnn", obs_dim=1, latent_dim=3, n_pwl=1, dtype=D)
    W = [[0.1, 0.2, 0.3], [0.0, -0.5, 1.0], [1.0, 0.0, 0.2]]
    set_params(m, A=[0.9, 0.5, 0.1], W=W, h=[0.0, 1.0, -1.0])
    z = torch.tensor([[1.0, -2.0, -3.0], [1.0, -2.0, 3.0]], dtype=D)
    # Phi*(z) = (z1, z2, relu(z3)): (1, -2, 0) and (1, -2, 3)
    expected = torch.tensor(
        [
            [0.9 + 0.1 - 0.4, -1.0 + 1.0 + 1.0, -0.3 + 1.0 - 1.0],
            [0.9 + 0.1 - 0.4 + 0.9, -1.0 + 1.0 + 3.0 + 1.0, 0.3 + 1.0 + 0.6 - 1.0],
        ],
        dtype=D,
    )
    torch.testing.assert_close(m.step(z), expected)
    assert m.region_code(z).tolist() == [[False], [True]]
    Wt = torch.tensor(W, dtype=D)
    J_off = torch.diag(torch.tensor([0.9, 0.5, 0.1], dtype=D)) + Wt * torch.tensor([1.0, 1.0, 0.0], dtype=D)
    torch.testing.assert_close(m.jacobian(z)[0], J_off)
    torch.testing.assert_close(m.jacobian(z)[1], torch.diag(torch.tensor([0.9, 0.5, 0.1], dtype=D)) + Wt)
    # initial state [x; L x] and read-out of the first unit
    with torch.no_grad():
        m.obs.L.copy_(torch.tensor([[2.0], [-1.0]], dtype=D))
    torch.testing.assert_close(m.init_state(torch.tensor([[3.0]], dtype=D)), torch.tensor([[3.0, 6.0, -3.0]], dtype=D))
    torch.testing.assert_close(m.observe(z), z[:, :1])


@pytest.mark.parametrize("clipped", [False, True])
def test_shplrnn_region_codes_at_hand_picked_points(clipped):
    m = build("clipped-shplrnn" if clipped else "shplrnn", obs_dim=1, latent_dim=2, hidden_dim=3, dtype=D)
    set_params(m, A=[0.5, 0.5], W1=[[1.0, 0.0, 1.0], [0.0, 1.0, -1.0]], W2=[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]],
               h1=[0.0, 0.0], h2=[0.0, -1.0, 0.5])
    z = torch.tensor([[0.5, 2.0], [-1.0, 0.5]], dtype=D)
    # u = W2 z = (0.5, 2, 2.5) and (-1, 0.5, -0.5); u + h2 = (0.5, 1, 3) and (-1, -0.5, 0)
    on = [[True, True, True], [False, False, False]]  # 0 is not > 0
    pos = [[True, True, True], [False, True, False]]
    code = m.region_code(z).tolist()
    assert code == ([a + b for a, b in zip(on, pos)] if clipped else on)
    if clipped:  # W1 (relu(u + h2) - relu(u)) = W1 ((0, -1, 0.5), (0, -0.5, 0))
        phi = torch.tensor([[0.0, -1.0, 0.5], [0.0, -0.5, 0.0]], dtype=D)
    else:  # W1 relu(u + h2) = W1 ((0.5, 1, 3), (0, 0, 0))
        phi = torch.tensor([[0.5, 1.0, 3.0], [0.0, 0.0, 0.0]], dtype=D)
    W1 = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, -1.0]], dtype=D)
    torch.testing.assert_close(m.step(z), 0.5 * z + phi @ W1.T)


@pytest.mark.parametrize("clipped", [False, True])
def test_dendplrnn_by_hand(clipped):
    m = build("dendplrnn", obs_dim=1, latent_dim=2, n_bases=2, clipped=clipped, dtype=D)
    set_params(m, A=[0.5, 0.5], W=[[0.0, 1.0], [1.0, 0.0]], h=[0.0, 0.0], alpha=[1.0, -2.0],
               H=[[0.0, 1.0], [-1.0, 2.0]])
    z = torch.tensor([[1.5, 0.0]], dtype=D)
    # unit 1: 1*relu(1.5 - 0) - 2*relu(1.5 - 1) = 0.5; unit 2: 1*relu(0 + 1) - 2*relu(0 - 2) = 1
    phi = torch.tensor([0.5, 1.0], dtype=D)
    if clipped:  # minus (alpha_1 + alpha_2) relu(z) = +relu(z) = (1.5, 0)
        phi = phi + torch.tensor([1.5, 0.0], dtype=D)
    torch.testing.assert_close(m.step(z)[0], 0.5 * z[0] + phi.flip(0))
    # codes basis-major: [z1 > H11, z2 > H21, z1 > H12, z2 > H22] (+ [z1 > 0, z2 > 0])
    expected = [True, True, True, False] + ([True, False] if clipped else [])
    assert m.region_code(z)[0].tolist() == expected
