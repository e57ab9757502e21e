"""The scheduled reports file: every mistake named with its line, and a schedule that fires in its time zone."""

from datetime import datetime
from zoneinfo import ZoneInfo

from agent.config.yaml import load_text
from agent.report.schedule import State, parse_reports

BERLIN = ZoneInfo("Europe/Berlin")


def problems(text: str) -> list[str]:
    config, report = parse_reports(load_text(text, "reports.yaml"), "reports.yaml", {"shop"})
    return [str(problem) for problem in report.errors]


def test_every_mistake_is_named_with_its_line(tmp_path):
    found = problems("""\
smtp:
  smarthost: mail.example.com
  from: not an address
  auth_password: hunter2
state_directory: state
reports:
  - name: monthly review
    schedule: "0 8 31 2 mon-funday"
    time_zone: Europe/Berln
    period: a month
    services: [shop, warehouse]
    email: {to: []}
  - name: weekly
    schedule: "0 9 * * 1"
    period: last-week
""")
    assert found == [
        "reports.yaml:2: smtp.smarthost: 'mail.example.com' is not host:port (like mail.example.com:587)",
        "reports.yaml:3: smtp.from: 'not an address' is not an e-mail address",
        "reports.yaml:4: smtp.auth_password: keep the password out of the file: auth_password_file",
        "reports.yaml:7: reports[0].name: 'monthly review' may only contain letters, digits, '_', '-' and '.' "
        "(it names a state file)",
        found[4],
        "reports.yaml:9: reports[0].time_zone: 'Europe/Berln' is not an IANA time zone name (like UTC, "
        "Europe/Berlin, America/New_York)",
        found[6],
        "reports.yaml:11: reports[0].services: 'warehouse' is not the service of any spec given to ui (known: shop)",
        "reports.yaml:12: reports[0].email.to: give at least one recipient",
        "reports.yaml:13: reports[1]: give email, webhook or both: where the report goes",
    ]
    assert found[4].startswith("reports.yaml:8: reports[0].schedule: '0 8 31 2 mon-funday' is not a cron schedule")
    assert found[6].startswith("reports.yaml:10: reports[0].period: 'a month' is not a period: use a duration")


def test_a_valid_file_and_its_firings_in_local_time(tmp_path):
    (tmp_path / "url").write_text("http://127.0.0.1:1/hook\n")
    text = f"""\
state_directory: state
reports:
  - name: monthly
    schedule: "0 8 1 * *"
    time_zone: Europe/Berlin
    period: last-month
    webhook: {{url_file: {tmp_path / 'url'}}}
"""
    config, report = parse_reports(load_text(text, str(tmp_path / "reports.yaml")),
                                   str(tmp_path / "reports.yaml"), {"shop"})
    assert report.errors == [] and config is not None
    assert config.state_directory == tmp_path / "state"
    monthly = config.reports[0]
    assert monthly.history == 12 and monthly.channels == ("webhook",)
    after = datetime(2026, 3, 15, tzinfo=BERLIN).timestamp()
    firings = monthly.firings(after)
    assert [datetime.fromtimestamp(next(firings), BERLIN).isoformat() for _ in range(2)] == [
        "2026-04-01T08:00:00+02:00", "2026-05-01T08:00:00+02:00"]  # 08:00 on the wall clock, DST or not
    # what a firing judges: the month before it
    assert monthly.period.current(datetime(2026, 4, 1, 8, tzinfo=BERLIN).timestamp()).label == "March 2026"


def test_state_survives_a_restart_and_is_replaced_whole(tmp_path):
    path = tmp_path / "state" / "monthly.json"
    state = State.load(path, 1000.0)
    assert state.since == 1000.0 and path.exists()
    from agent.report.schedule import Delivered

    state.periods["November 2026"] = Delivered("November 2026", 2000.0, {"email": {"at": 2001.0}})
    state.save()
    again = State.load(path, 5000.0)
    assert again.since == 1000.0 and again.periods["November 2026"].sent == {"email": {"at": 2001.0}}
    assert [p.name for p in path.parent.iterdir()] == ["monthly.json"]  # no temporary file left behind
