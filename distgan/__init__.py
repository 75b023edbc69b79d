"""distgan: distributed GAN training jobs on Ray.

distgan train jobs/quickstart.yaml
"""

__version__ = "0.1.0"
