"""TARGET (Zhang et al., ICCV 2023) as run by fed-mammoth (baselines2-spec section 5): full fine-tuning with
FedAvg, plus data-free replay of the old classes through samples the server synthesises after every task.

Clients (5.1): AdamW (``target.lr``, ``target.weight_decay``) on the masked cross-entropy of the current task; from
task 1 on every step adds ``kd_weight`` · KD on one synthetic batch of the previous task's pool, over the logits
of the old classes [0, o_t), temperature ``kd_temperature``, no T² factor. The teacher is the global model at the
end of the previous task, i.e. the model every client receives in the task's first round (Q32: no extra
download). KD is KL(teacher || student) of the softened distributions: the official soft cross-entropy minus the
teacher's entropy, so the gradient is identical and the loss is 0 when student and teacher agree.

Server (5.2, ``end_task``; skipped after the last task, Q29): a fresh generator per task (images: 5.2; text: soft
tokens in word-embedding space, 5.4 a) trained for ``syn_rounds`` rounds of ``g_steps`` inner steps with
first-order MAML; loss ``oh_weight`` · CE(teacher, y) + ``adv_weight`` · L_adv (from round ``warmup`` on) +
``bn_weight`` · L_BN (inert: ViT and BERT have no BatchNorm, Q26); the lowest-loss batch of each round joins the
pool; after rounds ≥ warmup a re-initialised student is distilled on the pool so far (the adversary of L_adv).
Targets are uniform over all seen classes (``official_class_range: true``: the newest class excluded, Q27).
Synthesis runs in fp32 without loss scaling (Q31). Synthetic images are stored as uint8 and go through the
dataset's own training transform when reused (Q30; fed-mammoth's hard-coded RandomResizedCrop + flip +
Normalize(0.5) under ``dataset.preprocessing: official``); synthetic text is stored as float ``inputs_embeds``.

Communication (section 8): the whole model both ways every round; the pool once per client per task (ledger
kind "synthetic"). The pool is part of the method's state, so it survives a restart between tasks.
"""

from __future__ import annotations

import copy
import sys

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from lorm.data.transforms import (DEFAULT_RATIO, DEFAULT_SCALE, FLIP, BatchTransform, normalise, random_crop,
                                  random_horizontal_flip, to_float01)
from lorm.federated.training import derive_seed, generator
from lorm.methods.full import FederatedFull, RunContext
from lorm.methods.lwf import distillation_loss
from lorm.models.generators import ImageGenerator, SoftTokenGenerator, reinitialise_student

# random streams (first element after the run seed; see lorm.federated.training.generator)
STREAM_CLIENT_KD = 41  # (task, round, client): which synthetic samples a client replays, and their augmentation
STREAM_GENERATOR_INIT = 42  # (task): the fresh generator's initial weights
STREAM_STUDENT_INIT = 43  # (task): the student's re-initialisation
STREAM_SYNTHESIS = 44  # (task): noise, targets, augmentation and student-KD batches of the synthesis
CROP_PADDING = 4  # synthesis augmentation: RandomCrop(H, padding 4) + flip (5.2 item 3)


def soft_cross_entropy_kd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float):
    """The client's KD: KL(softmax(u/T) || softmax(s/T)), batch mean (see the module docstring)."""
    return distillation_loss(student_logits, teacher_logits, temperature)


def synthetic_targets(num_seen: int, batch: int, gen: torch.Generator, official_class_range: bool) -> torch.Tensor:
    """Classes the generator is asked for: uniform over [0, num_seen), or [0, num_seen − 1) as the official code
    (``randint(0, latest_class)``, spec Q27)."""
    high = num_seen - 1 if official_class_range else num_seen
    return torch.randint(0, max(high, 1), (batch,), generator=gen)


class BatchNormStatistics:
    """DeepInversion's L_BN on the teacher's BatchNorm2d inputs (sum over layers of the distances of the batch
    mean and variance to the running statistics). Identically 0 on ViT and BERT, which have none (Q26)."""

    def __init__(self, model: torch.nn.Module):
        self.losses: list[torch.Tensor] = []
        self.handles = [m.register_forward_hook(self.hook) for m in model.modules()
                        if isinstance(m, torch.nn.BatchNorm2d)]

    def hook(self, module, inputs, _output):
        x = inputs[0]
        mean, var = x.mean((0, 2, 3)), x.var((0, 2, 3), unbiased=False)
        self.losses.append(torch.norm(module.running_mean - mean, 2) + torch.norm(module.running_var - var, 2))

    def pop(self) -> torch.Tensor | float:
        total, self.losses = sum(self.losses, 0.0), []
        return total


class TARGET(FederatedFull):
    name = "target"

    def __init__(self, ctx: RunContext):
        super().__init__(ctx)
        self.cfg = ctx.cfg["target"]
        self.lr, self.weight_decay = self.cfg["lr"], self.cfg["weight_decay"]
        self.text = ctx.model.spec.modality == "text"
        self.teacher: torch.nn.Module | None = None
        # the previous task's pool: text (N, L, d) float32 inputs_embeds; images (N, H, W, 3) uint8
        self.synthetic: torch.Tensor | None = None
        self.client = 0
        if not self.text:
            self.image_train_transform, self.image_mean, self.image_std = self.synthetic_image_transforms(ctx)

    @staticmethod
    def synthetic_image_transforms(ctx: RunContext):
        """(training transform of stored synthetic images, mean, std of the synthesis view). Default: the dataset's
        own (Q30); under ``dataset.preprocessing: official`` fed-mammoth's hard-coded RandomResizedCrop(0.08–1,
        bicubic) + flip + Normalize(0.5)."""
        if ctx.cfg["dataset"].get("preprocessing") == "official":
            rrc = {"op": "random_resized_crop", "scale": DEFAULT_SCALE, "ratio": DEFAULT_RATIO}
            half = (0.5,) * 3
            official = BatchTransform([rrc, FLIP], half, half, ctx.model.spec.image_size, "TARGET official (Q30)")
            return official, half, half
        return ctx.train.train_transform, ctx.train.test_transform.mean, ctx.train.test_transform.std

    # ---- clients ----------------------------------------------------------------------------------------
    def frozen_global_copy(self) -> torch.nn.Module:
        """A frozen copy of the model holding the server's global parameters, in eval mode."""
        model = copy.deepcopy(self.model).requires_grad_(False).eval()
        with torch.no_grad():
            named = dict(model.named_parameters())
            for p in named.values():
                p.grad = None  # the live model's last gradients are not part of the copy
            for n, p in self.global_params.items():
                named[n].copy_(p)
        return model

    def begin_task(self, task: int) -> None:
        self.teacher = self.frozen_global_copy() if task > 0 else None

    def client_update(self, client: int, task: int, rnd: int, state: dict) -> dict:
        if rnd == 0 and task > 0 and self.synthetic is not None:
            self.ctx.ledger.download({"synthetic": self.synthetic}, kind="synthetic")
        self.client = client  # regulariser() draws the client's own synthetic batches
        return super().client_update(client, task, rnd, state)

    def synthetic_inputs(self, pool: torch.Tensor, size: int, gen: torch.Generator):
        """Model inputs of ``size`` pool samples drawn without replacement (images through the training transform
        of ``synthetic_image_transforms``; text as inputs_embeds with an all-ones mask)."""
        idx = torch.randperm(len(pool), generator=gen)[:size]
        x = pool[idx].to(self.ctx.runtime.device)
        if self.text:
            return {"inputs_embeds": x, "attention_mask": torch.ones(x.shape[:2], dtype=torch.long, device=x.device)}
        return self.image_train_transform(to_float01(x), gen)

    def regulariser(self, task: int, rnd: int):
        if task == 0 or self.synthetic is None or self.teacher is None:
            return None
        old = self.ctx.task_ranges[task][0]
        gen = generator(self.ctx.seed, STREAM_CLIENT_KD, task, rnd, self.client)

        def loss(**_):
            inputs = self.synthetic_inputs(self.synthetic, self.cfg["batch_size"], gen)
            with torch.no_grad():
                teacher_logits = self.teacher(inputs)[:, :old]
            student_logits = self.model(inputs)[:, :old]
            return self.cfg["kd_weight"] * soft_cross_entropy_kd(student_logits, teacher_logits,
                                                                 self.cfg["kd_temperature"])

        return loss

    # ---- server synthesis --------------------------------------------------------------------------------
    def end_task(self, task: int) -> None:
        if task == len(self.ctx.task_ranges) - 1:
            return  # Q29: a pool after the last task would never be used
        with self.ctx.timers("synthesis"):
            self.synthetic = self.synthesise(task)

    def build_generator(self, teacher: torch.nn.Module) -> torch.nn.Module:
        c = self.cfg
        if not self.text:
            return ImageGenerator(self.model.spec.image_size, c["nz"], c["ngf"])
        ids, mask = self.ctx.train.inputs["input_ids"], self.ctx.train.inputs["attention_mask"]
        cls_id, sep_id = int(ids[0, 0]), int(ids[0, int(mask[0].sum()) - 1])  # every row is [CLS] ... [SEP]
        words = teacher.encoder.bert.get_input_embeddings().weight.detach()
        return SoftTokenGenerator(words, words[cls_id], words[sep_id], c["text_length"], c["nz"], c["text_hidden"])

    def synthesis_view(self, x: torch.Tensor, gen: torch.Generator):
        """What teacher and student see of a generated batch: images padded-cropped, flipped and normalised like
        the dataset's inputs (5.2 item 3); text unchanged (5.4)."""
        if self.text:
            return {"inputs_embeds": x, "attention_mask": torch.ones(x.shape[:2], dtype=torch.long, device=x.device)}
        size = x.shape[-1]
        x = random_crop(F.pad(x, [CROP_PADDING] * 4), size, gen)
        return normalise(random_horizontal_flip(x, gen), self.image_mean, self.image_std)

    def to_pool(self, x: torch.Tensor) -> torch.Tensor:
        if self.text:
            return x.detach().float().cpu()
        return (x.detach() * 255.0).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu()

    def synthesise(self, task: int) -> torch.Tensor:
        c, seed, device = self.cfg, self.ctx.seed, self.ctx.runtime.device
        num_seen, batch = self.ctx.task_ranges[task][1], c["batch_size"]
        teacher = self.frozen_global_copy()
        student = reinitialise_student(self.frozen_global_copy(), generator(seed, STREAM_STUDENT_INIT, task))
        with torch.random.fork_rng(devices=[]):  # module init draws from the global RNG: seed it explicitly
            torch.manual_seed(derive_seed(seed, STREAM_GENERATOR_INIT, task))
            slow = self.build_generator(teacher).to(device)
        frozen = {id(t): t for t in vars(slow).values() if isinstance(t, torch.Tensor)}  # word embeddings: shared
        fast = copy.deepcopy(slow, memo=frozen)  # the inner loop's copy; reloaded from `slow` every round
        betas = tuple(c["betas"])
        meta_opt = torch.optim.Adam(slow.parameters(), lr=c["lr_g"] * c["g_steps"], betas=betas)
        student_opt = torch.optim.SGD(student.parameters(), lr=c["student_lr"], momentum=c["student_momentum"],
                                      weight_decay=c["student_weight_decay"])
        bn_stats = BatchNormStatistics(teacher)
        gen = generator(seed, STREAM_SYNTHESIS, task)
        pool: list[torch.Tensor] = []
        show = bool(self.ctx.cfg["runtime"].get("progress")) and sys.stderr.isatty()
        for rnd in tqdm(range(c["syn_rounds"]), desc=f"TARGET synthesis task {task + 1}", file=sys.stderr,
                        disable=not show, leave=False):
            z = torch.randn(batch, c["nz"], generator=gen).to(device).requires_grad_(True)
            targets = synthetic_targets(num_seen, batch, gen, c["official_class_range"]).to(device)
            fast.load_state_dict(slow.state_dict())
            inner = torch.optim.Adam([{"params": fast.parameters(), "lr": c["lr_g"]}, {"params": [z], "lr": c["lr_z"]}],
                                     betas=betas)
            best_loss, best = float("inf"), None
            for step in range(c["g_steps"]):
                x = fast(z)
                view = self.synthesis_view(x, gen)
                teacher_logits = teacher(view).float()
                loss = c["oh_weight"] * F.cross_entropy(teacher_logits, targets) + c["bn_weight"] * bn_stats.pop()
                if rnd >= c["warmup"]:  # the adversarial term (0 before: the student is not trained yet)
                    student_logits = student(view).float()
                    agree = (student_logits.argmax(1) == teacher_logits.argmax(1)).float()
                    log_t, log_s = teacher_logits.log_softmax(1), student_logits.log_softmax(1)
                    divergence = (log_t.exp() * (log_t - log_s)).sum(1)
                    loss = loss - c["adv_weight"] * (agree * divergence).mean()
                value = float(loss.detach())
                if best is None or value < best_loss:
                    best_loss, best = value, x.detach().clone()
                inner.zero_grad(set_to_none=True)
                loss.backward()
                if step == 0:
                    meta_opt.zero_grad(set_to_none=False)
                for p_slow, p_fast in zip(slow.parameters(), fast.parameters()):  # first-order MAML
                    if p_fast.grad is not None:
                        p_slow.grad = p_fast.grad.clone() if p_slow.grad is None else p_slow.grad + p_fast.grad
                if step == c["g_steps"] - 1:
                    meta_opt.step()
                inner.step()
            pool.append(self.to_pool(best))
            if rnd >= c["warmup"]:
                self.distil_student(student, teacher, torch.cat(pool), student_opt, gen)
        for handle in bn_stats.handles:
            handle.remove()
        return torch.cat(pool)

    def distil_student(self, student, teacher, pool: torch.Tensor, opt, gen: torch.Generator) -> None:
        """``kd_train``: student_kd_steps SGD steps on pool batches, T² · KL(teacher_T || student_T) (batchmean)."""
        c, temperature = self.cfg, self.cfg["student_temperature"]
        student.train().requires_grad_(True)
        for _ in range(c["student_kd_steps"]):
            inputs = self.synthetic_inputs(pool, c["batch_size"], gen)
            with torch.no_grad():
                teacher_logits = teacher(inputs).float()
            log_s = F.log_softmax(student(inputs).float() / temperature, 1)
            loss = temperature ** 2 * F.kl_div(log_s, F.softmax(teacher_logits / temperature, 1),
                                               reduction="batchmean")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(student.parameters(), c["student_clip"])
            opt.step()
        student.eval().requires_grad_(False)

    # ---- state --------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {**super().state_dict(), "synthetic": self.synthetic}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.synthetic = state.get("synthetic")
        self.teacher = None  # rebuilt from the restored global model by begin_task
