"""Whether the /metrics page still fits a scrape: Prometheus gives a scrape 10 s by default
(``scrape_timeout``), and a page written slower than that is never stored, however well the agent probes.

The cost of a page is measured when one is written (seconds per sample of the last /metrics answer); before
any, it is estimated at ``SECONDS_PER_SAMPLE`` (bench_exposition writes 100,000 series in 0.63 s on a 2-core
machine: 6.3 us a series; 10 us leaves room for a busier machine). The agent warns, in its log and on its
status page, once a page would take more than half the scrape timeout.
"""

from __future__ import annotations

from agent.series.family import HistogramFamily
from agent.series.store import Store
from agent.series.table import TableHistogram

SECONDS_PER_SAMPLE = 10e-6
SHARE_OF_TIMEOUT = 0.5  # warn with this share of the scrape timeout used: a page grows, machines get busy


def samples(store: Store) -> int:
    """The lines of samples the page holds (a histogram series is its buckets, sum and count)."""
    total = 0
    for group in list(store.groups.values()):
        for family in list(group.families.values()):
            if isinstance(family, HistogramFamily):
                total += len(family.values) * (len(family.spec.bounds) + 3)
            else:
                total += len(family.values)
    for table in list(store.tables.values()):
        for cells in table.ordered:
            samples_per_series = len(cells.spec.bounds) + 3 if isinstance(cells, TableHistogram) else 1
            total += cells.count() * samples_per_series
    return total


class PageCost:
    """What writing /metrics took last, to project the next page's time."""

    def __init__(self) -> None:
        self.seconds_per_sample: float | None = None  # measured; None before the first page
        self._samples = 0  # the page's size as last counted

    def written(self, seconds: float) -> None:
        """A /metrics page was written in ``seconds`` (its size: the last count)."""
        if self._samples:
            self.seconds_per_sample = seconds / self._samples

    def warning(self, count: int, scrape_timeout: float) -> str | None:
        """What to tell the operator about a page of ``count`` samples, or None when it fits."""
        self._samples = count
        per_sample = self.seconds_per_sample if self.seconds_per_sample is not None else SECONDS_PER_SAMPLE
        seconds = count * per_sample
        if seconds <= scrape_timeout * SHARE_OF_TIMEOUT:
            return None
        how = "measured" if self.seconds_per_sample is not None else "estimated"
        return (f"/metrics holds {count:,} samples and takes about {seconds:.1f} s to write ({how}), more than half of "
                f"the {scrape_timeout:g} s a scrape may take (global.scrape_timeout): Prometheus would drop scrapes. "
                "Shard the targets (--shard.count) or leave out series (omit_series).")
