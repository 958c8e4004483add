"""The planner behind the Plan page: size a serving or training job per accelerator before submitting it (the same
figures as ``suanli plan serve`` / ``suanli plan train``)."""

# no "from __future__ import annotations": FastAPI reads these annotations at run time

from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query

from suanli.api.deps import Who
from suanli.api.models import ERRORS, PlanRow
from suanli.errors import SuanliError

router = APIRouter(tags=["plan"], responses=ERRORS)
Text = Annotated[str, Query(min_length=1, max_length=200)]
Opt = Annotated[str | None, Query(min_length=1, max_length=50)]


def _rows(fn: Any, *args: Any, **kw: Any) -> list[dict[str, Any]]:
    try:
        return [r.to_dict() for r in fn(*args, **kw)]
    except (SuanliError, ValueError, ArithmeticError) as e:
        raise HTTPException(422, str(e)) from None


@router.get("/v1/plan/serve", response_model=list[PlanRow])
def plan_serve(
    p: Who, model: Text, accelerator: Text,
    input_tokens: Annotated[str, Query(max_length=50)] = "2000",
    output_tokens: Annotated[str, Query(max_length=50)] = "500",
    qps: Annotated[float | None, Query(gt=0, le=1e9)] = None,
    ttft_slo: Opt = None, tpot_slo: Opt = None,
    chips: Annotated[int | None, Query(ge=1, le=1_000_000)] = None,
    precision: Literal["auto", "bf16", "fp8", "fp4"] = "auto",
    image_tokens: Annotated[str, Query(max_length=50, description="image tokens per request (multimodal models; "
                                       "0 for text)")] = "0",
) -> list[dict[str, Any]]:
    """Chips per replica, batch, throughput, TTFT/TPOT, replicas and $/M tokens to serve ``model``."""
    from suanli.perf.api import plan_serve as plan
    from suanli.perf.units import parse_accelerators, parse_count, parse_duration, parse_tokens

    try:
        kw = dict(input_tokens=parse_tokens(input_tokens, "input_tokens"),
                  output_tokens=parse_tokens(output_tokens, "output_tokens"), qps=qps,
                  ttft_slo_s=parse_duration(ttft_slo, "ttft_slo") if ttft_slo else None,
                  tpot_slo_s=parse_duration(tpot_slo, "tpot_slo") if tpot_slo else None,
                  precision=precision, chips=chips, image_tokens=parse_count(image_tokens, "image_tokens"))
        accs = parse_accelerators(accelerator)
    except SuanliError as e:
        raise HTTPException(422, str(e)) from None
    return _rows(plan, model, accs, **kw)


@router.get("/v1/plan/train", response_model=list[PlanRow])
def plan_train(
    p: Who, model: Text, accelerator: Text, tokens: Annotated[str, Query(min_length=1, max_length=50)],
    seq: Annotated[int, Query(ge=1, le=10_000_000)] = 4096,
    chips: Annotated[int | None, Query(ge=1, le=1_000_000)] = None,
    precision: Literal["bf16", "fp8", "fp4"] = "bf16",
    target_days: Annotated[float, Query(gt=0, le=100_000)] = 60,
    method: Annotated[Literal["pretrain", "full", "lora"],
                      Query(description="pretrain, full (full fine-tuning) or lora (frozen base)")] = "pretrain",
    lora_rank: Annotated[int, Query(ge=1, le=65_536, description="LoRA adapter rank (method=lora)")] = 16,
) -> list[dict[str, Any]]:
    """Chips, layout, step time, MFU, days, chip-hours, energy and cost to train ``model`` on ``tokens``."""
    from suanli.perf.api import plan_train as plan
    from suanli.perf.units import parse_accelerators, parse_tokens

    try:
        n = parse_tokens(tokens, "tokens")
        accs = parse_accelerators(accelerator)
    except SuanliError as e:
        raise HTTPException(422, str(e)) from None
    return _rows(plan, model, accs, n, seq=seq, precision=precision, chips=chips, target_days=target_days,
                 method=method, lora_rank=lora_rank)
