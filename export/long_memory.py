"""Why LSTM and GRU exist: the adding problem, three cells, one budget.

The adding problem (Hochreiter & Schmidhuber, 1997) is the smallest task that needs memory over
a long distance. Each sequence has T timesteps of two features:

    x[t, 0] ~ U(0, 1)        a random value
    x[t, 1] in {0, 1}        a marker: 1 at exactly two positions, one in each half

and the target is the sum of the two marked values. The first marked value can be ~T steps
before the end, so the model has to carry it across the whole sequence. A model that learned
nothing predicts the mean 1.0 and scores MSE = Var(u1 + u2) = 2/12 ~= 0.167.

We train a vanilla tanh RNN, an LSTM and a GRU with the same hidden size, optimizer, learning
rate, clipping, batch size and number of steps, and show two things:

  1. learning curves (validation MSE vs step): gated cells get far below 0.167, the vanilla RNN
     stays at "learned nothing";
  2. the gradient norm ||dL/dh_t|| for t = 1..T, at initialization and after training: for the
     vanilla RNN it decays by orders of magnitude going back from t = T (vanishing gradients),
     so the error signal never reaches the first marked value.

Run (about 3-4 minutes on an idle 2-core CPU, far longer when the cores are shared):

    python -m rnnserve.export.long_memory                 # writes docs/long_memory_*.png
    python -m rnnserve.export.long_memory --help          # options: --steps, --seq-len, --out, ...
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from torch import nn

# -----------------------------------------------------------------------------
# Config: every knob of the experiment, with the defaults the README numbers come from.


@dataclass
class Config:
    seq_len: int = 100  # T; the adding problem is "long" from T = 100 on
    hidden: int = 64  # hidden size, identical for the three cells
    batch_size: int = 64  # fresh random sequences per step (the task has infinite data)
    steps: int = 3000  # optimizer steps per cell: same budget for every cell
    lr: float = 3e-3  # Adam learning rate, identical for the three cells
    clip: float = 1.0  # max global gradient norm; keeps exploding RNN gradients finite
    eval_every: int = 100  # steps between validation evaluations
    val_size: int = 2000  # fixed validation set, shared by all cells
    grad_batch: int = 256  # sequences used to measure ||dL/dh_t||
    seed: int = 0  # one seed drives data, init and validation set
    cells: str = "rnn,lstm,gru"  # comma-separated subset of rnn, lstm, gru
    out: str = "docs"  # where the PNGs go


CELLS: dict[str, type[nn.RNNBase]] = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
LABELS = {"rnn": "RNN (tanh)", "lstm": "LSTM", "gru": "GRU"}
COLORS = {"rnn": "tab:red", "lstm": "tab:blue", "gru": "tab:green"}
BASELINE_MSE = 2.0 / 12.0  # MSE of always predicting 1.0: Var(U1 + U2) = 2 * 1/12


# -----------------------------------------------------------------------------
# Data


def adding_batch(
    batch: int, seq_len: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample a batch of the adding problem.

    Returns x (B, T, 2) and y (B,). One marker lies in [0, T/2) and one in [T/2, T), so the
    first value to remember is on average 3T/4 steps before the end.
    """
    half = seq_len // 2
    values = torch.rand(batch, seq_len, generator=gen)  # (B, T)
    first = torch.randint(0, half, (batch,), generator=gen)  # (B,)
    second = torch.randint(half, seq_len, (batch,), generator=gen)  # (B,)
    markers = torch.zeros(batch, seq_len)  # (B, T)
    rows = torch.arange(batch)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    x = torch.stack([values, markers], dim=-1)  # (B, T, 2)
    y = (values * markers).sum(dim=1)  # (B,)
    return x, y


# -----------------------------------------------------------------------------
# Model


class AddingModel(nn.Module):
    """One recurrent layer followed by a linear read-out of the last hidden state.

    The read-out only sees h_T, so everything about the first marked value must be carried
    through the recurrence: that is exactly what the experiment tests.
    """

    def __init__(self, cell: str, hidden: int) -> None:
        super().__init__()
        self.cell = cell
        self.rnn = CELLS[cell](input_size=2, hidden_size=hidden, batch_first=True)
        self.head = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Fast path for training: the fused kernel over the whole sequence."""
        out, _ = self.rnn(x)  # (B, T, H): h_t for every t
        return self.head(out[:, -1]).squeeze(-1)  # (B,)

    def forward_stepwise(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Same function, unrolled one timestep at a time, to expose every h_t to autograd.

        The fused kernel's output sequence cannot be used for dL/dh_t: only out[:, -1] feeds the
        loss, so out.grad would be zero for t < T (the recurrence happens inside the kernel).
        Calling the same module on one step at a time makes each h_t a graph node whose .grad is
        the full derivative of the loss through all later timesteps.
        """
        state: torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None = None
        hs: list[torch.Tensor] = []
        for t in range(x.shape[1]):
            _, state = self.rnn(x[:, t : t + 1], state)  # state: (1, B, H) or (h, c)
            h = state[0] if isinstance(state, tuple) else state  # (1, B, H)
            h.retain_grad()
            hs.append(h)
        return self.head(hs[-1][0]).squeeze(-1), hs  # (B,), T x (1, B, H)


# -----------------------------------------------------------------------------
# Measurements


@torch.no_grad()
def evaluate(model: AddingModel, x: torch.Tensor, y: torch.Tensor) -> float:
    """Validation MSE on the fixed held-out set."""
    model.eval()
    mse = nn.functional.mse_loss(model(x), y).item()
    model.train()
    return mse


def hidden_grad_norms(model: AddingModel, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ||dL_i/dh_t|| for t = 1..T, as a (T,) tensor.

    L_i is the squared error of sequence i. Summing (not averaging) the per-sequence losses
    makes the gradient w.r.t. sequence i's hidden state equal to dL_i/dh_t, independent of the
    batch size.
    """
    model.zero_grad(set_to_none=True)
    pred, hs = model.forward_stepwise(x)
    ((pred - y) ** 2).sum().backward()
    norms = torch.stack([h.grad[0].norm(dim=-1).mean() for h in hs])  # (T,)
    model.zero_grad(set_to_none=True)
    return norms.detach()


# -----------------------------------------------------------------------------
# Training


def train_cell(
    cell: str,
    cfg: Config,
    x_val: torch.Tensor,
    y_val: torch.Tensor,
    x_g: torch.Tensor,
    y_g: torch.Tensor,
) -> dict[str, object]:
    """Train one cell with the shared budget; return its curve and gradient profiles."""
    # Same seed for every cell: same training batches in the same order, comparable init RNG.
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    model = AddingModel(cell, cfg.hidden)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)

    grads_init = hidden_grad_norms(model, x_g, y_g)
    curve_steps, curve_mse = [0], [evaluate(model, x_val, y_val)]
    t0 = time.perf_counter()
    for step in range(1, cfg.steps + 1):
        x, y = adding_batch(cfg.batch_size, cfg.seq_len, gen)  # (B, T, 2), (B,)
        loss = nn.functional.mse_loss(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
        opt.step()
        if step % cfg.eval_every == 0 or step == cfg.steps:
            curve_steps.append(step)
            curve_mse.append(evaluate(model, x_val, y_val))
            if step % (cfg.eval_every * 5) == 0 or step == cfg.steps:
                print(
                    f"  {cell:4s} step {step:5d}  train {loss.item():.4f}  "
                    f"val {curve_mse[-1]:.4f}  ({time.perf_counter() - t0:.0f}s)"
                )
    grads_trained = hidden_grad_norms(model, x_g, y_g)
    return {
        "steps": curve_steps,
        "mse": curve_mse,
        "grads_init": grads_init,
        "grads_trained": grads_trained,
        "seconds": time.perf_counter() - t0,
    }


# -----------------------------------------------------------------------------
# Plots


def plot_learning_curves(results: dict[str, dict[str, object]], cfg: Config, path: Path) -> None:
    """Validation MSE vs step, log y, with the 'learned nothing' line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for cell, r in results.items():
        ax.plot(r["steps"], r["mse"], label=LABELS[cell], color=COLORS[cell], lw=2)
    ax.axhline(BASELINE_MSE, color="black", ls="--", lw=1.2, label="learned nothing (0.167)")
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("validation MSE (log scale)")
    ax.set_title(
        f"Adding problem, T = {cfg.seq_len}: same budget for every cell\n"
        f"hidden {cfg.hidden}, Adam lr {cfg.lr:g}, batch {cfg.batch_size}, clip {cfg.clip:g}"
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_gradient_norms(results: dict[str, dict[str, object]], cfg: Config, path: Path) -> None:
    """||dL/dh_t|| over t, before and after training, one panel each, log y."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
    t = range(1, cfg.seq_len + 1)
    for ax, key, title in (
        (axes[0], "grads_init", "at initialization"),
        (axes[1], "grads_trained", f"after {cfg.steps} steps"),
    ):
        for cell, r in results.items():
            ax.plot(t, r[key].numpy(), label=LABELS[cell], color=COLORS[cell], lw=2)
        ax.set_yscale("log")
        ax.set_xlabel("timestep t")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    axes[0].set_ylabel(r"$\|\partial L / \partial h_t\|$ (mean over batch, log scale)")
    fig.suptitle(
        f"Gradient reaching each hidden state, adding problem T = {cfg.seq_len} "
        f"(loss only at t = T)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# -----------------------------------------------------------------------------
# Main


def parse_args() -> Config:
    """Every Config field becomes a --flag with the dataclass default."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for f in fields(Config):
        flag = "--" + f.name.replace("_", "-")
        parser.add_argument(
            flag, type=type(f.default), default=f.default, help=f"(default {f.default})"
        )
    return Config(**vars(parser.parse_args()))


def main() -> None:
    cfg = parse_args()
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    print("config:", asdict(cfg))
    cells = [c.strip() for c in cfg.cells.split(",") if c.strip()]

    # ---- phase 1: fixed data for validation and for the gradient measurement --------------
    val_gen = torch.Generator().manual_seed(cfg.seed + 1000)
    x_val, y_val = adding_batch(cfg.val_size, cfg.seq_len, val_gen)  # (N, T, 2), (N,)
    x_g, y_g = adding_batch(cfg.grad_batch, cfg.seq_len, val_gen)  # (G, T, 2), (G,)
    print(f"predict-the-mean MSE on validation: {((y_val - 1.0) ** 2).mean().item():.4f}")

    # ---- phase 2: train every cell with the same budget ---------------------------------------
    t_start = time.perf_counter()
    results: dict[str, dict[str, object]] = {}
    for cell in cells:
        print(f"=== training {LABELS[cell]} ===")
        results[cell] = train_cell(cell, cfg, x_val, y_val, x_g, y_g)

    # ---- phase 3: report and plots ------------------------------------------------------------
    print("=== results ===")
    print(
        f"{'cell':12s} {'final val MSE':>14s} {'|dL/dh_1|/|dL/dh_T| init':>26s} "
        f"{'trained':>10s} {'train s':>8s}"
    )
    for cell, r in results.items():
        gi, gt = r["grads_init"], r["grads_trained"]
        print(
            f"{LABELS[cell]:12s} {r['mse'][-1]:14.4f} {(gi[0] / gi[-1]).item():26.2e} "
            f"{(gt[0] / gt[-1]).item():10.2e} {r['seconds']:8.0f}"
        )
    print(f"{'baseline':12s} {BASELINE_MSE:14.4f}  (always predict 1.0)")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    curves_png = out / "long_memory_learning_curves.png"
    grads_png = out / "long_memory_gradient_norms.png"
    plot_learning_curves(results, cfg, curves_png)
    plot_gradient_norms(results, cfg, grads_png)
    print(f"wrote {curves_png}, {grads_png}")
    print(f"total time {time.perf_counter() - t_start:.0f}s")


if __name__ == "__main__":
    main()
