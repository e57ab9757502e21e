"""What every prober kind shares (issue 20): the common config keys, scheduling, probe slots, retries, the
families every probe writes, failure reasons, discovered targets. A kind is a ``ProberKind`` (kind.py) whose
prober records one attempt into a ``ProbeResult`` (result.py). Import the modules themselves: this package's
``__init__`` stays empty so that light modules (client.py, families.py) can be imported alone."""
