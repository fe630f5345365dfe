"""Footprint status writes through the operator's asyncio client vs the official ``kubernetes`` client.

The operator writes up to ``max_writes_per_s`` footprint statuses per second, from its asyncio loop. The official
``kubernetes`` client is synchronous (urllib3): from an event loop it must run in a thread pool. This runs a kmock
API emulator, creates ``--objects`` footprints, then merge-patches every status ``--rounds`` times with
``--concurrency`` requests in flight (the operator benchmark's emulator, with O(1) lookups), once through
``jouleledger.kube.api.KubeApi`` (httpx, asyncio) and once
through ``kubernetes.client.CustomObjectsApi.patch_namespaced_custom_object_status`` in a thread pool of the same
size. Printed: writes per second (median of the rounds) and the ratio. Both share this machine's cores with the
emulator, so only the ratio carries over.

    .venv/bin/python -m bench.kube_writes [--objects 200] [--rounds 5] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import kmock
from kubernetes import client as kube_client
from tests._kube_emulator import register_resources

from bench.operator_load import BenchEmulator
from jouleledger.kube.api import KubeApi

GROUP, VERSION, PLURAL = "jouleledger.io", "v1alpha1", "workloadfootprints"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    if min(args.objects, args.rounds, args.concurrency) < 1:
        parser.error("--objects, --rounds and --concurrency must be at least 1")
    return args


def body(index: int, round_: int) -> dict[str, object]:
    return {"status": {"energyMillijoules": index * 1000 + round_, "gpuSeconds": float(round_)}}


async def with_httpx(server: str, objects: int, concurrency: int, round_: int) -> float:
    async with httpx.AsyncClient(base_url=server, limits=httpx.Limits(max_connections=concurrency)) as http:
        api = KubeApi(http)
        slots = asyncio.Semaphore(concurrency)

        async def one(index: int) -> None:
            async with slots:
                path = f"/apis/{GROUP}/{VERSION}/namespaces/ml/{PLURAL}/fp-{index}/status"
                await api.merge_patch(path, body(index, round_))

        started = time.perf_counter()
        await asyncio.gather(*(one(index) for index in range(objects)))
        return objects / (time.perf_counter() - started)


async def with_kubernetes(server: str, objects: int, concurrency: int, round_: int) -> float:
    configuration = kube_client.Configuration(host=server)
    configuration.connection_pool_maxsize = concurrency
    custom = kube_client.CustomObjectsApi(kube_client.ApiClient(configuration))
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(concurrency) as pool:

        def one(index: int) -> None:
            custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, "ml", PLURAL, f"fp-{index}", body(index, round_)
            )

        started = time.perf_counter()
        await asyncio.gather(*(loop.run_in_executor(pool, one, index) for index in range(objects)))
        return objects / (time.perf_counter() - started)


async def main(args: argparse.Namespace) -> int:
    async with BenchEmulator() as emulator, kmock.Server(emulator):
        register_resources(emulator)
        server = str(emulator.url).rstrip("/")
        async with httpx.AsyncClient(base_url=server) as http:
            api = KubeApi(http)
            for i in range(args.objects):
                await api.create(
                    f"/apis/{GROUP}/{VERSION}/namespaces/ml/{PLURAL}",
                    {
                        "apiVersion": f"{GROUP}/{VERSION}",
                        "kind": "WorkloadFootprint",
                        "metadata": {"name": f"fp-{i}"},
                    },
                )
        ours, theirs = [], []
        for round_ in range(args.rounds):
            ours.append(await with_httpx(server, args.objects, args.concurrency, round_))
            theirs.append(await with_kubernetes(server, args.objects, args.concurrency, round_))
    mine, other = statistics.median(ours), statistics.median(theirs)
    print(
        f"footprint status merge patches, {args.objects} objects x {args.rounds} rounds, {args.concurrency} in flight"
    )
    print(f"  KubeApi (httpx, asyncio):            {mine:8.0f} writes/s (median)")
    print(f"  kubernetes client (urllib3, threads): {other:8.0f} writes/s (median)")
    print(f"  ratio: {mine / other:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
