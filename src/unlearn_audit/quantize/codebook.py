"""NF4 and FP4: 4-bit codebook quantization with one absmax per block, written out in torch.

These are the formats of bitsandbytes (Dettmers et al., QLoRA), which the paper uses for its 4-bit
results. ``bnb-nf4`` / ``bnb-fp4`` run the library itself; these presets are the exact algorithm,
independent of bitsandbytes' CPU kernels (and of their AVX512-BF16 repacking bug), with any blocksize:

- flatten the (out, in) weight row by row and cut it into blocks of ``blocksize`` values (a shorter
  last block gets its own absmax), as bitsandbytes does;
- divide each block by its absmax, so values lie in [-1, 1];
- map each value to the nearest entry of the 16-value codebook (ties go to the lower entry, as
  bitsandbytes' midpoint bucketing does), and multiply back by the absmax.

The codebooks are bitsandbytes' tables: NF4 holds the quantiles of a standard normal scaled to [-1, 1];
FP4 is the E2M1 float format scaled so that its largest value is 1 (it has a +0 and a -0, which are
the same value and therefore one grid cell here).
"""

from __future__ import annotations

import torch

from .base import GridCodes, WeightwiseScheme

NF4 = (
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
    0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
    0.7229568362236023, 1.0,
)
# E2M1 magnitudes {0, 0.0625, 8, 12, 4, 6, 2, 3} / 12 (bitsandbytes' normalisation), and their negatives.
FP4 = tuple(sorted({s * v / 12 for s in (1, -1) for v in (0.0, 0.0625, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0)}))
CODEBOOKS = {"nf4": NF4, "fp4": FP4}


def _grid_constants(kind: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The codebook, its 15 midpoints and its mean spacing, computed on the CPU and then moved to
    ``device`` (CUDA would divide by 15 as a multiplication by 1/15, which can differ in the last bit)."""
    code = torch.tensor(CODEBOOKS[kind], dtype=torch.float32)
    mids = (code[:-1] + code[1:]) / 2
    mean_step = (code[-1] - code[0]) / (len(code) - 1)
    return code.to(device), mids.to(device), mean_step.to(device)


def _cells(weight: torch.Tensor, kind: str, blocksize: int):
    """(cell index per value as (n_blocks, blocksize) int32, absmax per block, codebook, n) of the
    flattened weight, every tensor on the weight's device.

    A flattened length that is a multiple of ``blocksize`` (every chunk ``fill`` passes: its rows are
    a multiple of the block) is cut into blocks as a view; only a short last block needs a padded copy.
    The absmax is max(|min|, |max|): the value of |w|.amax() without writing |w|."""
    code, mids, _ = _grid_constants(kind, weight.device)
    w = weight.detach().to(torch.float32).reshape(-1)
    n = w.numel()
    n_blocks = -(-n // blocksize)
    if n == n_blocks * blocksize:
        blocks = w.view(n_blocks, blocksize)
    else:
        padded = torch.zeros(n_blocks * blocksize, dtype=torch.float32, device=w.device)
        padded[:n] = w
        blocks = padded.view(n_blocks, blocksize)
    absmax = torch.maximum(blocks.amin(dim=1).abs(), blocks.amax(dim=1).abs())
    # bitsandbytes multiplies full blocks by 1/absmax and divides the short last block; a value on a
    # codebook midpoint can round either way by one ulp, so the same arithmetic is used here (1/absmax
    # as a tensor division, which CPU and CUDA both round correctly).
    limited = absmax.clamp(min=1e-38)
    scaled = blocks * torch.div(torch.ones_like(limited), limited).unsqueeze(1)
    if n % blocksize:
        scaled[-1] = blocks[-1] / limited[-1]
    scaled.clamp_(-1, 1)
    # The nearest entry, a tie going low: the number of midpoints strictly below the value, which is what
    # torch.bucketize(scaled, mids) returns, counted in 15 vectorised comparisons into bytes (about 3x
    # faster on CPU than bucketize's binary search per element).
    idx = torch.zeros(scaled.shape, dtype=torch.uint8, device=scaled.device)
    above = torch.empty(scaled.shape, dtype=torch.bool, device=scaled.device)
    for m in mids:
        idx.add_(torch.gt(scaled, m, out=above).view(torch.uint8))
    return idx.long(), absmax, code, n


def codebook_quantize(weight: torch.Tensor, kind: str, blocksize: int = 64) -> torch.Tensor:
    """The dequantized float32 weight alone (``codebook_grid``'s second value, without its codes)."""
    idx, absmax, code, n = _cells(weight, kind, blocksize)
    return code[idx].mul_(absmax.unsqueeze(1)).reshape(-1)[:n].view(weight.shape)


def codebook_grid(weight: torch.Tensor, kind: str, blocksize: int = 64) -> tuple[GridCodes, torch.Tensor]:
    """Cells and the dequantized weight of one (out, in) matrix under NF4 or FP4, on its device."""
    idx, absmax, code, n = _cells(weight, kind, blocksize)
    deq = code[idx].mul_(absmax.unsqueeze(1)).reshape(-1)[:n].view(weight.shape)
    mean_step = _grid_constants(kind, weight.device)[2]
    step = (absmax.unsqueeze(1) * mean_step).expand(-1, blocksize).reshape(-1)[:n].view(weight.shape)
    codes = idx.reshape(-1)[:n].view(weight.shape).to(torch.int16)
    # The zero cell is the codebook's entry 0.0 (index 7 in both tables); FP4's -0 is not a separate
    # entry (see the module docstring), so a -0 weight lands in the same cell as +0.
    zero = torch.tensor(CODEBOOKS[kind].index(0.0), dtype=torch.int16, device=codes.device)
    return GridCodes(codes, absmax.unsqueeze(1), step, zero), deq


class CodebookScheme(WeightwiseScheme):
    """Fake-quantized NF4 or FP4 over every Linear/Conv1D except lm_head."""

    bits = 4

    def __init__(self, kind: str, blocksize: int = 64) -> None:
        if kind not in CODEBOOKS:
            raise ValueError(kind)
        self.kind, self.blocksize = kind, blocksize
        self.row_block = blocksize  # a chunk of rows holds whole blocks whatever the row length
        self.name = kind if blocksize == 64 else f"{kind}-b{blocksize}"
        self.description = f"{kind.upper()} codebook, absmax per block of {blocksize} (reference, no bitsandbytes)"

    def params(self) -> dict:
        return {"method": self.kind, "bits": 4, "blocksize": self.blocksize, "codebook": list(CODEBOOKS[self.kind]),
                "absmax": "float32 per block, no double quantization", "rounding": "nearest entry, ties low",
                "skipped_modules": "lm_head (output embeddings) and embeddings"}

    def quantize_rows(self, w: torch.Tensor) -> torch.Tensor:
        return codebook_quantize(w, self.kind, self.blocksize)

    def codes(self, weight: torch.Tensor) -> GridCodes:
        return codebook_grid(weight, self.kind, self.blocksize)[0]
