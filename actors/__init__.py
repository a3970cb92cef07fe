"""Ray actor shells around the testbed's plain classes; registered so the core finds them by name."""

from actors.chain import ChainActor
from actors.compute import ComputeActor
from actors.node import NodeActor
from testbed.workload import ACTORS

ACTORS.register("compute")(ComputeActor)
ACTORS.register("node")(NodeActor)
ACTORS.register("chain")(ChainActor)
