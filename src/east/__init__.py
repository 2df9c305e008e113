"""east — Embeddings As Teachers.

Two stages that meet at an on-disk cache: ``east extract`` runs a frozen pre-trained audio
model (the teacher) over a dataset once and stores its time-indexed embeddings in a Zarr
store; ``east train`` trains a small student on audio plus those cached embeddings.
"""

__version__ = "0.1.0"
