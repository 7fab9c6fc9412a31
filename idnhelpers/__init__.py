"""idnhelpers: instance-dependent label noise (IDN) research tools, after Chen et al., AAAI 2021.

Where each part of the paper lives:

- ``data``       data sets offline as uint8 tensors (MNIST, Fashion-MNIST, CIFAR-10, digits)
- ``models``     the paper's networks (Appendix A)
- ``train``      the training engine: Appendix A protocols, epoch-averaged softmax (Eq. 3)
- ``many``       many independent runs in one call (vmap / processes / loop), same results and cache
- ``noise``      IDN generation (Algorithm 1, Eq. 3) and exact-rate CCN (Definition 1)
- ``published``  the authors' published IDN labels and the ``label,label_noisy`` CSV format
- ``stats``      transition matrices and the CCN hypothesis test (Section 2, Theorem 1)
- ``csr``        critical sample ratio (Section 3.2, Eq. 4) by Langevin adversarial sample search
- ``seal``       SEAL (Algorithm 2) and its label-correction analysis (Eq. 9-10)
- ``plots``      the figures of the book
- ``runs``       train-or-load cache
- ``bench``, ``check_bf16``  speed benchmark against the official code's loop; bf16 vs fp32
"""

__version__ = "0.1.0"
