"""What a trained generator has learnt, in pictures (``distgan explore``).

``latent.py``: slerp and SeFa's closed-form directions; ``pictures.py``: the grids drawn from G;
``neighbours.py``: nearest training images in a feature space and the memorisation check.
"""
