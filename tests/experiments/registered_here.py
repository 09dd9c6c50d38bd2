"""A criterion registered in the user's own code (as the guide shows), for the sweep tests that
check that Ray workers learn it through the sweep file's ``imports:``."""
from fts_core.scoring import criterion


@criterion("abs_weight_test", needs_data=False)
def abs_weight_test(ctx):
    """|θ| (magnitude under another name)."""
    return {n: ctx.theta[n].abs() for n in ctx.names}
