#!/usr/bin/env python3
"""Times the writer's per-message lookups by platform id on a large SQLite store, with the
schema before and after migration 0008 and the old and new delivery-report lookup.

    python3 bench/lookups.py [--messages 200000] [--reports 1000000]

One conversation holds `messages` messages (a busy group chat); `reports` delivery reports
are stored for one bot. Prints the mean time per lookup and SQLite's plan for each.
"""
import argparse, glob, os, sqlite3, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
MIGRATIONS = sorted(glob.glob(os.path.join(HERE, "..", "migrations", "sqlite", "*.sql")))

REPLY = "SELECT id FROM messages WHERE conversation_id = ? AND external_id = ?"
REPORT_OLD = ("SELECT DISTINCT external_id FROM status_reports WHERE message_id IS NULL "
              "AND external_id IN (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
REPORT_NEW = ("SELECT k.column1, (SELECT external_id FROM status_reports WHERE bot_id = ? "
              "AND external_id = k.column1 AND message_id IS NULL LIMIT 1) FROM (VALUES "
              + ", ".join(["(?)"] * 16) + ") AS k")


def build(path, migrations, n_messages, n_reports):
    db = sqlite3.connect(path)
    for m in migrations:
        db.executescript(open(m).read())
    db.execute("INSERT INTO tenants VALUES ('t', 't', 'UTC', 0, 'config', 0)")
    db.execute("INSERT INTO conversations (id, tenant_id, bot_id, platform, external_chat_id, kind, created_at) "
               "VALUES ('c', 't', 'b', 'telegram', '-100', 'group', 0)")
    db.executemany(
        "INSERT INTO messages (id, tenant_id, bot_id, platform, conversation_id, direction, content, status, "
        "external_id, dedup_key, created_at, status_history) VALUES (?, 't', 'b', 'telegram', 'c', 'inbound', "
        "'{}', 'received', ?, ?, ?, '[]')",
        ((f"m{i:09}", str(i), f"u{i}", i) for i in range(n_messages)))
    db.executemany(
        "INSERT INTO status_reports (bot_id, external_id, status, message_id, report, created_at) "
        "VALUES ('b', ?, 'delivered', ?, '{}', 0)",
        ((f"SM{i:09}", f"m{i}") for i in range(n_reports)))
    db.commit()  # no ANALYZE: the gateway runs none, as a store fresh from a deployment
    return db


def timed(db, sql, args, runs):
    plan = "; ".join(r[3] for r in db.execute("EXPLAIN QUERY PLAN " + sql, args))
    started = time.perf_counter()
    for _ in range(runs):
        db.execute(sql, args).fetchall()
    return (time.perf_counter() - started) / runs * 1e6, plan


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=200_000)
    ap.add_argument("--reports", type=int, default=1_000_000)
    a = ap.parse_args()
    keys = [f"SMnew{i}" for i in range(16)]
    with tempfile.TemporaryDirectory() as d:
        rows = []
        for label, migrations in (("before (0001-0007)", MIGRATIONS[:7]), ("after (0001-0008)", MIGRATIONS)):
            db = build(os.path.join(d, f"{len(migrations)}.db"), migrations, a.messages, a.reports)
            us, plan = timed(db, REPLY, ("c", str(a.messages // 2)), 20)
            rows.append((label, "reply's original in a chat of %d messages" % a.messages, us, plan))
            db.close()
        db = sqlite3.connect(os.path.join(d, "8.db"))
        for label, sql, args in (("before", REPORT_OLD, keys), ("after", REPORT_NEW, ["b"] + keys)):
            us, plan = timed(db, sql, args, 5)
            rows.append((label, "reports waiting for 16 sends, %d stored" % a.reports, us, plan))
        print("| schema/query | lookup | mean per statement | SQLite's plan |")
        print("|---|---|---|---|")
        for label, what, us, plan in rows:
            print(f"| {label} | {what} | {us:,.0f} µs | {plan} |")


if __name__ == "__main__":
    main()
