"""Scale-out on Ray: batch jobs that reuse the library's own components, locally or on a cluster.

- :func:`batch_recommend`: top-k for every user of a saved pipeline or scorer, on an actor pool (model loaded
  once per actor), to Parquet and the store's ``recommendations`` table.
- :func:`batch_embed`: a catalogue's texts through the embedding cache, the missing ones embedded by Ray Data
  ``map_batches`` on an actor pool (encoder loaded once per actor).

Both give exactly what one process gives, and run on a private local Ray when no cluster address is given.
Ray comes with the ``scale`` extra and is imported only when a job runs.
"""

from llmrec.scale._ray import RayOptions, import_ray, ray_session
from llmrec.scale.embed import BatchEmbedReport, batch_embed
from llmrec.scale.recommend import BatchRecommendReport, batch_recommend, load_model, model_users, recommend_with

__all__ = [
    "BatchEmbedReport",
    "BatchRecommendReport",
    "RayOptions",
    "batch_embed",
    "batch_recommend",
    "import_ray",
    "load_model",
    "model_users",
    "ray_session",
    "recommend_with",
]
