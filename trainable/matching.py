"""One-to-one matching of candidate masks to ground-truth masks.

The IoU of every candidate against every ground-truth mask comes from one matrix product of the
flattened binary masks; ``scipy.optimize.linear_sum_assignment`` then picks the pairs with the
largest total IoU, each ground-truth mask getting at most one candidate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment


@dataclass
class Matching:
    """The Hungarian pairs of one image.

    Attributes:
        candidate_index: (P,) candidate of each pair, in the flattened candidate order.
        gt_index: (P,) ground-truth mask of each pair.
        iou: (P,) IoU of each pair.
        foreground: (P,) bool, pairs whose IoU reaches the threshold.
    """

    candidate_index: torch.Tensor
    gt_index: torch.Tensor
    iou: torch.Tensor
    foreground: torch.Tensor

    def foreground_pairs(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return (candidate index, gt index, IoU) of the foreground pairs only."""
        keep = self.foreground
        return self.candidate_index[keep], self.gt_index[keep], self.iou[keep]


def iou_matrix(candidates: torch.Tensor, gt_masks: torch.Tensor) -> torch.Tensor:
    """Return the (C, G) IoU of binary masks ``candidates`` (C, H, W) against ``gt_masks`` (G, H, W).

    A pair whose union is empty has IoU 0.
    """
    pred = candidates.flatten(1).float()
    gt = gt_masks.flatten(1).float().to(pred.device)
    intersection = pred @ gt.T
    union = pred.sum(1, keepdim=True) + gt.sum(1)[None, :] - intersection
    return torch.where(union > 0, intersection / union.clamp(min=1.0), torch.zeros_like(union))


def hungarian_match(ious: torch.Tensor, threshold: float) -> Matching:
    """Pair candidates with ground-truth masks so that the summed IoU is maximal.

    Args:
        ious: (C, G) IoU matrix.
        threshold: IoU a pair needs to count as foreground.
    """
    device = ious.device
    if ious.shape[0] == 0 or ious.shape[1] == 0:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return Matching(empty, empty, torch.zeros(0, device=device),
                        torch.zeros(0, dtype=torch.bool, device=device))

    matrix = ious.detach().double().cpu().numpy()
    rows, cols = linear_sum_assignment(matrix, maximize=True)
    pair_iou = torch.from_numpy(matrix[rows, cols]).float().to(device)
    return Matching(
        candidate_index=torch.from_numpy(rows.astype(np.int64)).to(device),
        gt_index=torch.from_numpy(cols.astype(np.int64)).to(device),
        iou=pair_iou,
        foreground=pair_iou >= threshold,
    )
