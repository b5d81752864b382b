"""Locust users for bench/serving_load.py: one scenario per run, at a fixed request rate.

Read by Locust in its own environment (.venv-bench), not by the pipeline: everything it
needs comes from environment variables the benchmark sets (the API key, the ids to ask
about, the scenario and the rate per user).
"""

import json
import os
import random

from locust import FastHttpUser, constant_throughput, task

SCENARIO = os.environ["SERVING_SCENARIO"]  # known | context | related | mixed
with open(os.environ["SERVING_IDS_FILE"]) as ids_file:
    IDS = json.load(ids_file)
HEADERS = {"X-API-Key": os.environ["SERVING_API_KEY"]}


class Shopper(FastHttpUser):
    wait_time = constant_throughput(float(os.environ["SERVING_RATE_PER_USER"]))

    def ask_known(self):
        user = random.choice(IDS["users"])
        self.client.get(f"/v1/users/{user}/recommendations?k=10", headers=HEADERS, name="known shopper")

    def ask_context(self):
        recent = random.sample(IDS["items"], 3)
        body = {"recent_item_ids": recent, "cart_item_ids": recent[:1], "k": 10, "segment": IDS.get("segment")}
        self.client.post("/v1/recommendations", json=body, headers=HEADERS, name="shopper in context")

    def ask_related(self):
        item = random.choice(IDS["items"])
        self.client.get(f"/v1/items/{item}/related?k=10", headers=HEADERS, name="related items")

    @task
    def ask(self):
        if SCENARIO == "mixed":
            random.choice((self.ask_known, self.ask_known, self.ask_context, self.ask_related))()
        else:
            getattr(self, f"ask_{SCENARIO}")()  # (User.context is Locust's own)
