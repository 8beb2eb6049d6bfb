# faiss-cpu ships SWIG-generated stubs that miss most of its API (SearchParameters' keyword
# arguments, fvec_inner_products_ny, invlists, ...); mypy reads this instead: faiss is Any.
from typing import Any

def __getattr__(name: str) -> Any: ...
