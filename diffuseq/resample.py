"""Timestep samplers: which t each training example is noised to, with importance weights.

`sample(batch_size, generator)` returns t [B] and weights [B] such that E[w * loss(t)] is the
uniform average of the per-timestep losses. Draws come from a caller-given generator so every
process of a distributed run draws the same timesteps for the same global batch.
"""
import numpy as np
import torch


class UniformSampler:
    name = "uniform"

    def __init__(self, num_steps):
        self.num_steps = num_steps

    def probs(self):
        return np.full(self.num_steps, 1.0 / self.num_steps)

    def sample(self, batch_size, generator, device="cpu"):
        p = torch.as_tensor(self.probs(), dtype=torch.float64)
        t = torch.multinomial(p, batch_size, replacement=True, generator=generator)
        weights = 1.0 / (self.num_steps * p[t])
        return t.to(device), weights.float().to(device)

    def update(self, t, losses):
        """Record per-example losses at timesteps t (no-op for uniform)."""

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


class LossAwareSampler(UniformSampler):
    """Importance sampling by loss: p(t) proportional to sqrt(E[loss_t^2]) over the last
    `history` losses seen at t, mixed with a small uniform part; uniform until every t has a
    full history."""

    name = "lossaware"

    def __init__(self, num_steps, history=10, uniform_prob=0.001):
        super().__init__(num_steps)
        self.history = history
        self.uniform_prob = uniform_prob
        self.loss_history = np.zeros((num_steps, history), dtype=np.float64)
        self.loss_counts = np.zeros(num_steps, dtype=np.int64)

    def warmed_up(self):
        return bool((self.loss_counts == self.history).all())

    def probs(self):
        if not self.warmed_up():
            return np.full(self.num_steps, 1.0 / self.num_steps)
        w = np.sqrt(np.mean(self.loss_history ** 2, axis=-1))
        w = w / w.sum()
        return w * (1 - self.uniform_prob) + self.uniform_prob / self.num_steps

    def update(self, t, losses):
        for ti, loss in zip(np.asarray(t).tolist(), np.asarray(losses, dtype=np.float64).tolist()):
            if self.loss_counts[ti] == self.history:  # drop the oldest
                self.loss_history[ti, :-1] = self.loss_history[ti, 1:]
                self.loss_history[ti, -1] = loss
            else:
                self.loss_history[ti, self.loss_counts[ti]] = loss
                self.loss_counts[ti] += 1

    def state_dict(self):
        return {"loss_history": self.loss_history.copy(), "loss_counts": self.loss_counts.copy()}

    def load_state_dict(self, state):
        self.loss_history = np.array(state["loss_history"], dtype=np.float64)
        self.loss_counts = np.array(state["loss_counts"], dtype=np.int64)
        self.num_steps, self.history = self.loss_history.shape


def create_sampler(name, num_steps):
    if name == "uniform":
        return UniformSampler(num_steps)
    if name in ("lossaware", "loss-second-moment"):
        return LossAwareSampler(num_steps)
    raise ValueError(f"unknown schedule sampler {name!r}; choose uniform or lossaware")
