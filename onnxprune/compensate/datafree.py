"""Data-free compensation: the value a removed channel carries, estimated from its BatchNormalization.

Where a channel is cut at a scoring BN, its output there is ``beta + gamma * xhat``; with the BN's input
matching its running statistics, ``xhat`` ~ N(0, 1), so the removed channel is N(beta, gamma²): a point
constant ``beta`` exactly when gamma = 0. The walk carries that mean and spread (standard deviation) to the
next nonlinearity, which turns them into ``E[act(N(mu, s²))]`` (closed forms, Gauss-Hermite quadrature
of the op's own reference implementation for any other unary op); from there on the value is a point
constant that consumers fold into their biases. Linear per-channel maps (BN, Mul/Div by a constant, Add/Sub,
Identity) scale the spread; anything else (pools, Concat, Resize, Split, Reshape) keeps the mean and drops
the spread to 0, which only matters when a nonlinearity follows before a consumer.

Where no BN scores a channel (exports that fold the BN into the Conv, as PaddlePaddle's do), the removed
channel carries its producer's bias: what the channel outputs when its filter sees nothing, and the same
whether the export writes the bias into the Conv or adds it after (an Add after the Conv carries it in any
case; 0 for the first form would prune two exports of one network to different models). It is not the
channel's mean (the folded BN's beta, which the fold mixed with W·E[x]): calibration measures that. The
analysis finds those channels in a first walk and carries their biases in a second.

A model pruned before has bias maps between some Convs and their BNs: the BN still scores and cuts those
channels, and its running statistics include the map, so N(beta, gamma²) is the estimate there too (beta
the mean over positions; the map makes the border differ); exact when gamma = 0.

The pieces live where they act: ``Analysis.cut_value`` (the cut), ``rules/moments.py`` (the closed forms
and quadrature the activation rules apply), the consumers' rules (bias folding; ``rules/conv.py`` builds
the bias map of a zero-padded Conv), ``rewrite.masked_reference`` (the reference for question 1 of the
verification) and ``compensate/summary.py`` (the report).

Modes (``--compensate``, ``options.Compensate``): ``none`` cuts every removed channel to 0 (the masked model
of the verification), ``bn`` uses the estimate above, ``calib`` the empirical mean from calibration data
(calibration stage).
"""
