"""A live simulation: the members of a generated world play against a running service over HTTP.

``load_members`` samples members with their hidden traits and flights, ``plan_requests`` schedules their
recommend calls over simulated days, ``run_simulation`` makes the calls and posts the members' responses
(drawn from the world's acceptance model, with fatigue) back as events.
"""

from recsys.simulation.plan import PlannedRequest, plan_requests
from recsys.simulation.runner import SimulationError, SimulationReport, experiment_label, run_simulation
from recsys.simulation.world import SimMembers, load_members

__all__ = [
    "PlannedRequest",
    "SimMembers",
    "SimulationError",
    "SimulationReport",
    "experiment_label",
    "load_members",
    "plan_requests",
    "run_simulation",
]
