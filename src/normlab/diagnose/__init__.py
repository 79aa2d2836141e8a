"""`normlab diagnose`: measure why batch normalization helps, the way Ioffe & Szegedy (2015) and Santurkar et al.
(2018) did, on the study's models and data — compiled into the training program, not a Python loop per step."""
