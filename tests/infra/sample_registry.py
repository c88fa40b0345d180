"""A registry shaped unlike the product's, to check the stack follows whatever the registry says."""

from shared.registry import JobPayload, Registry, RetryPolicy


class Bill(JobPayload):
    month: str = ""


registry = Registry()
# Two jobs sharing one queue: one queue, one function (the dispatcher), the strictest settings of the two.
registry.job("bills.render", payload=Bill, queue="billing", timeout=60, memory=512, retry=RetryPolicy(max_attempts=4), concurrency=3, batch_window=30)
registry.job("bills.send", payload=Bill, queue="billing", timeout=20, batch_size=5, batch_window=10, concurrency=6)
# 09:00 on the 10th in Ulaanbaatar, as EventBridge cron.
registry.job(
    "bills.monthly", payload=Bill, queue="billing-cron", schedule="cron(0 9 10 * ? *)", timezone="Asia/Ulaanbaatar"
)
