"""The machine: which devices a case uses, the inventory, and the ceilings a result is judged against
(matmul peak, all-reduce bandwidth), on one host or across hosts."""
