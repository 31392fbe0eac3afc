"""Protocol tests of every PLRNN-family model: analytic Jacobians against autograd, region codes
and affine pieces against step, the shallow canonical form (values and gradients), ensembles via
torch.func, determinism, save/load, float64."""

from __future__ import annotations

import copy

import pytest
import torch
from pwl_cases import CASES, IDS, M, N, make, states
from torch.func import functional_call, grad, jacrev, stack_module_state, vmap

from dsrecon.models import build, from_config, load, save_model
from dsrecon.models.pwl_common import shallow_jacobian, shallow_step

OBS = ["identity", "affine"]


def autograd_jacobian(model, z):
    return vmap(jacrev(lambda zz: model.step(zz[None])[0]))(z)


@pytest.mark.parametrize("obs", OBS)
@pytest.mark.parametrize("name,hyper", CASES, ids=IDS)
def test_jacobian_matches_autograd(name, hyper, obs):
    model = make(name, hyper, obs=obs)
    z = states(model)
    J = model.jacobian(z)
    assert J.shape == (z.shape[0], M, M) and J.dtype == torch.float64
    torch.testing.assert_close(J, autograd_jacobian(model, z), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name,hyper", CASES, ids=IDS)
def test_affine_piece_reproduces_step_in_its_region(name, hyper):
    model = make(name, hyper)
    z = states(model)
    codes = model.region_code(z)
    assert codes.dtype == torch.bool and codes.shape == (z.shape[0], model.code_length)
    F = model.step(z)
    for i in range(z.shape[0]):
        W, h = model.affine_piece(codes[i])
        assert W.shape == (M, M) and h.shape == (M,)
        torch.testing.assert_close(W @ z[i] + h, F[i], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(W, model.jacobian(z[i : i + 1])[0], rtol=1e-12, atol=1e-12)
    # batched codes give the same pieces as one at a time
    Wb, hb = model.affine_piece(codes)
    torch.testing.assert_close((Wb @ z[..., None])[..., 0] + hb, F, rtol=1e-12, atol=1e-12)
    # integer 0/1 codes are accepted
    W0, h0 = model.affine_piece(codes[0].long())
    torch.testing.assert_close(W0, Wb[0])


@pytest.mark.parametrize("name,hyper", CASES, ids=IDS)
def test_region_code_changes_piece_only_across_boundaries(name, hyper):
    """Two states with the same code share the affine map (tested on a nearby state)."""
    model = make(name, hyper)
    z = states(model, n=16)
    z2 = z + 1e-7 * torch.randn_like(z)
    same = (model.region_code(z) == model.region_code(z2)).all(dim=-1)
    assert same.any()
    torch.testing.assert_close(model.jacobian(z)[same], model.jacobian(z2)[same])


@pytest.mark.parametrize("obs", OBS)
@pytest.mark.parametrize("name,hyper", CASES, ids=IDS)
def test_shallow_form_reproduces_step_and_jacobian(name, hyper, obs):
    model = make(name, hyper, obs=obs)
    form = model.shallow_form()
    Lp = form["W1"].shape[1]
    assert set(form) == {"a", "W1", "W2", "h1", "h2", "relu_mask"}
    assert form["a"].shape == (M,) and form["W1"].shape == (M, Lp) and form["W2"].shape == (Lp, M)
    assert form["h1"].shape == (M,) and form["h2"].shape == (Lp,)
    assert form["relu_mask"].dtype == torch.bool and form["relu_mask"].shape == (Lp,)
    z = states(model)
    torch.testing.assert_close(shallow_step(form, z, model.clipped), model.step(z), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(shallow_jacobian(form, z, model.clipped), model.jacobian(z), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name,hyper", CASES, ids=IDS)
def test_shallow_form_gradients_equal_step_gradients(name, hyper):
    model = make(name, hyper)
    z = states(model, n=32)
    target = torch.randn_like(z)
    params = [p for n, p in model.named_parameters() if not n.startswith("obs.")]

    def grads(fn):
        loss = ((fn(z) - target) ** 2).sum()
        return torch.autograd.grad(loss, params, allow_unused=True)

    g_step = grads(model.step)
    g_form = grads(lambda zz: shallow_step(model.shallow_form(), zz, model.clipped))
    for (n, _), a, b in zip([np for np in model.named_parameters() if not np[0].startswith("obs.")], g_step, g_form):
        assert b is not None, f"no gradient reaches {n} through shallow_form()"
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=f"gradient of {n}")
        assert a.abs().sum() > 0, f"zero gradient for {n}"
        if n == "W" and name in ("plrnn", "dendplrnn"):  # W is off-diagonal: its diagonal gets no gradient
            assert torch.all(torch.diagonal(a) == 0)


@pytest.mark.parametrize("obs", OBS)
@pytest.mark.parametrize("name,hyper", CASES[::2] + [CASES[5]], ids=IDS[::2] + [IDS[5]])
def test_ensemble_vmap_equals_loop(name, hyper, obs):
    members = [make(name, hyper, obs=obs, seed=s, dtype=torch.float32) for s in range(3)]
    params, buffers = stack_module_state(members)
    base = copy.deepcopy(members[0]).to("meta")

    def run(p, b, *args, method="step"):
        return functional_call(base, (p, b), args, {"method": method})

    z = torch.randn(8, M)
    x = torch.randn(8, N)
    out = vmap(run, in_dims=(0, 0, None))(params, buffers, z)
    for k, m in enumerate(members):
        torch.testing.assert_close(out[k], m.step(z), rtol=1e-6, atol=1e-6)
    z0 = vmap(lambda p, b, xx: run(p, b, xx, method="init_state"), in_dims=(0, 0, None))(params, buffers, x)
    forms = vmap(lambda p, b: run(p, b, method="shallow_form"), in_dims=(0, 0))(params, buffers)
    for k, m in enumerate(members):
        torch.testing.assert_close(z0[k], m.init_state(x), rtol=1e-5, atol=1e-5)
        for key, v in m.shallow_form().items():
            torch.testing.assert_close(forms[key][k], v)

    # gradients of a teacher-forced one-step loss: vmap(grad) == per-member autograd
    def loss(p, b, zz, xx):
        zf = run(p, b, zz, xx, 0.5, method="force")
        return ((run(p, b, run(p, b, zf), method="observe") - xx) ** 2).mean() + 1e-3 * run(
            p, b, method="latent_regularization"
        )

    g = vmap(grad(loss), in_dims=(0, 0, None, None))(params, buffers, z, x)
    for k, m in enumerate(members):
        ref_loss = ((m.observe(m.step(m.force(z, x, 0.5))) - x) ** 2).mean() + 1e-3 * m.latent_regularization()
        ref = dict(zip([n for n, _ in m.named_parameters()],
                       torch.autograd.grad(ref_loss, list(m.parameters()), allow_unused=True)))
        for n, v in ref.items():
            expected = torch.zeros_like(g[n][k]) if v is None else v
            torch.testing.assert_close(g[n][k], expected, rtol=1e-4, atol=1e-6, msg=f"grad {n}")


@pytest.mark.parametrize("name,hyper", CASES, ids=IDS)
def test_seed_determinism_and_from_config(name, hyper):
    a = build(name, obs_dim=N, latent_dim=M, seed=7, **hyper)
    b = build(name, obs_dim=N, latent_dim=M, seed=7, **hyper)
    c = build(name, obs_dim=N, latent_dim=M, seed=8, **hyper)
    for (k, v), (k2, v2) in zip(a.state_dict().items(), b.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    assert any(not torch.equal(v, c.state_dict()[k]) for k, v in a.state_dict().items())
    assert a.dtype == torch.float32
    cfg = a.config
    assert cfg["name"] == name and cfg["obs_dim"] == N and cfg["latent_dim"] == M
    rebuilt = from_config(cfg)
    assert type(rebuilt) is type(a) and rebuilt.config == cfg
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in a.state_dict().items()}


def test_build_alrnn_is_deterministic():
    a = build("alrnn", obs_dim=3, latent_dim=20, n_pwl=2, seed=1)
    b = build("alrnn", obs_dim=3, latent_dim=20, n_pwl=2, seed=1)
    z = torch.randn(4, 20)
    assert torch.equal(a.step(z), b.step(z))
    assert torch.equal(a.init_state(z[:, :3]), b.init_state(z[:, :3]))


@pytest.mark.parametrize("obs", OBS)
@pytest.mark.parametrize("name,hyper", CASES, ids=IDS)
def test_save_load_round_trip(name, hyper, obs, tmp_path):
    model = make(name, hyper, obs=obs, dtype=torch.float32)
    save_model(model, tmp_path / "m")
    back = load(tmp_path / "m")
    assert type(back) is type(model) and back.config == model.config
    z = torch.randn(16, M)
    assert torch.equal(back.step(z), model.step(z))
    x = torch.randn(16, N)
    assert torch.equal(back.init_state(x), model.init_state(x))
    assert torch.equal(back.observe(z), model.observe(z))


@pytest.mark.parametrize("obs", OBS)
@pytest.mark.parametrize("name,hyper", CASES, ids=IDS)
def test_float64_matches_float32(name, hyper, obs):
    m32 = make(name, hyper, obs=obs, dtype=torch.float32)
    m64 = copy.deepcopy(m32).double()
    z = torch.randn(16, M, dtype=torch.float64)
    for fn in ("step", "jacobian"):
        out = getattr(m64, fn)(z)
        assert out.dtype == torch.float64
        torch.testing.assert_close(out.float(), getattr(m32, fn)(z.float()), rtol=1e-5, atol=1e-5)
    assert all(v.dtype == torch.float64 for v in m64.shallow_form().values() if v.dtype != torch.bool)
    W, h = m64.affine_piece(m64.region_code(z)[0])
    assert W.dtype == h.dtype == torch.float64
    x = torch.randn(4, N, dtype=torch.float64)
    assert m64.generate(x, 5).dtype == torch.float64


@pytest.mark.parametrize("obs", OBS)
@pytest.mark.parametrize("name,hyper", CASES[:1] + CASES[4:7], ids=IDS[:1] + IDS[4:7])
def test_generate_and_force(name, hyper, obs):
    model = make(name, hyper, obs=obs)
    x0 = torch.randn(4, N, dtype=torch.float64)
    out = model.generate(x0, 6)
    assert out.shape == (4, 6, N)
    torch.testing.assert_close(out[:, 0], x0)  # M >= N: observe(init_state(x)) == x for both models
    z = model.init_state(x0)
    torch.testing.assert_close(out[:, 1], model.observe(model.step(z)))
    x = torch.randn(4, N, dtype=torch.float64)
    torch.testing.assert_close(model.force(z, x, 0.0), z)
    torch.testing.assert_close(model.force(z, x, 1.0), model.data_state(x, z))
    torch.testing.assert_close(model.observe(model.force(z, x, 1.0)), x)
    # a context (B, C, N) uses its last step
    ctx = torch.randn(4, 3, N, dtype=torch.float64)
    torch.testing.assert_close(model.init_state(ctx), model.init_state(ctx[:, -1]))


@pytest.mark.parametrize("name,hyper", CASES, ids=IDS)
def test_leading_dimensions(name, hyper):
    """step / jacobian / region_code accept (..., M), e.g. a (B, T, M) latent trajectory."""
    model = make(name, hyper)
    z = states(model, n=12).reshape(3, 4, M)
    torch.testing.assert_close(model.step(z), model.step(z.reshape(12, M)).reshape(3, 4, M))
    torch.testing.assert_close(model.jacobian(z), model.jacobian(z.reshape(12, M)).reshape(3, 4, M, M))
    assert torch.equal(model.region_code(z), model.region_code(z.reshape(12, M)).reshape(3, 4, -1))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("obs", OBS)
@pytest.mark.parametrize("name,hyper", CASES, ids=IDS)
def test_cuda_matches_cpu(name, hyper, obs):
    cpu = make(name, hyper, obs=obs)
    gpu = copy.deepcopy(cpu).to("cuda")
    z = states(cpu)
    for fn in ("step", "jacobian", "region_code"):
        torch.testing.assert_close(getattr(gpu, fn)(z.cuda()).cpu(), getattr(cpu, fn)(z))
    code = cpu.region_code(z)[0]
    for a, b in zip(gpu.affine_piece(code), cpu.affine_piece(code)):  # a CPU code is moved over
        torch.testing.assert_close(a.cpu(), b)
    for key, v in gpu.shallow_form().items():
        assert v.device.type == "cuda"
        torch.testing.assert_close(v.cpu(), cpu.shallow_form()[key])
    x = torch.randn(4, N, dtype=torch.float64)
    torch.testing.assert_close(gpu.init_state(x.cuda()).cpu(), cpu.init_state(x))
