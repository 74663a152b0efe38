"""``harness status``: jobs by state, failures with their kind and message, what is running."""

from __future__ import annotations

import time

from harness.grading.store import STATES, Store


def status_report(db) -> str:
    with Store(db, create=False) as store:
        counts = store.counts()
        lines = [f"{store.path}: {sum(counts.values())} job(s): "
                 + ", ".join(f"{counts[s]} {s}" for s in STATES)]
        challenge = store.get_meta("challenge")
        if challenge:
            lines[0] = f"{challenge['name']}: " + lines[0]
        now = time.time()
        for row in store.jobs(state="running"):
            left = (row["lease_deadline"] or now) - now
            lines.append(f"running  {row['submission']} on {row['dataset']} ({row['split']}), attempt "
                         f"{row['attempts']}, lease {'expired' if left < 0 else f'{left:.0f} s left'}")
        for row in store.jobs(state="queued"):
            if row["failure_kind"]:
                lines.append(f"retry    {row['submission']} on {row['dataset']} ({row['split']}) after "
                             f"{row['failure_kind']}: {row['failure_message']}")
        for rows in store.duplicates():
            lines.append(f"identical content ({rows[0]['content_hash'][:12]}) from "
                         + ", ".join(f"{r['name']} ({r['participant']})" for r in rows))
        for row in store.jobs(state="failed"):
            lines.append(f"failed   {row['submission']} on {row['dataset']} ({row['split']}): "
                         f"{row['failure_kind']}: {row['failure_message']}"
                         + (f"  [log: {row['log_path']}]" if row["log_path"] else ""))
        return "\n".join(lines) + "\n"
