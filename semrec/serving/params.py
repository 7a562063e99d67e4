"""The API's shared request parameters and dependencies (every router uses these)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Depends, Path, Query, Request

from semrec.serving.schemas import ErrorOut
from semrec.serving.security import read_access, write_access
from semrec.serving.service import ApiService
from semrec.store import Filters


async def _service(request: Request) -> ApiService:
    return request.app.state.service  # type: ignore[no-any-return]


Service = Annotated[ApiService, Depends(_service)]
K = Annotated[int, Query(ge=1, le=1000, description="How many results.")]
Diversity = Annotated[float, Query(ge=0.0, le=1.0, description=(
    "MMR re-ranking: 0 = pure relevance, 1 = most diverse."))]
SimilarBy = Annotated[Literal["both", "text", "image"], Query(description=(
    "Similar by: image (looks like it), text, or both (the fused vector)."))]


async def query_filters(
    category: Annotated[str | None, Query(description="Only this category.")] = None,
    min_price: Annotated[float | None, Query(ge=0, allow_inf_nan=False)] = None,
    max_price: Annotated[float | None, Query(ge=0, allow_inf_nan=False)] = None,
    in_stock: Annotated[bool | None, Query(description="true: in stock only.")] = None,
    exclude: Annotated[list[str], Query(description=(
        "Product IDs never to return (repeat the parameter, or separate with commas)."))] = [],  # noqa: B006
) -> Filters:
    """The business-rule filters shared by ``similar`` and ``feed``."""
    return Filters.parse(category, min_price, max_price, in_stock, exclude)


FiltersDep = Annotated[Filters, Depends(query_filters)]
ProductId = Annotated[str, Path(min_length=1, max_length=200)]
UserId = Annotated[str, Path(min_length=1, max_length=200)]
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut}, 404: {"model": ErrorOut}, 413: {"model": ErrorOut},
    422: {"model": ErrorOut}}
READ = [Depends(read_access)]
WRITE = [Depends(write_access)]
