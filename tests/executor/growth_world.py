"""A world where more, smaller nodes cost less: two premium 8c/16g nodes ($100 each) carry
eight 1-CPU pods; three 4c/8g nodes ($40 each) carry them too, and no fleet of two nodes is
as cheap (8c + 2c costs $122, 4c + 4c holds only six of the pods)."""

from __future__ import annotations

DC = "5f1b6c3e-0d2a-4c1e-9f44-2a7b3c9d0e11"
SMALL_SIZE, GROW_SIZE, BIG_SIZE = 201, 202, 203


def growth_text(*, replicas: int = 8, workers: int = 2) -> str:
    return f"""\
apiVersion: sim.vpsie-rebalancer.io/v1
kind: World
metadata:
  name: grow
spec:
  datacenters:
    - identifier: {DC}
      name: New York 1
      country: US
  sizes:
    - {{id: {SMALL_SIZE}, name: k8s-2c-4g, cpu: 2, ramMB: 4096, diskGB: 80,
       prices: {{{DC}: {{monthly: "22.00", hourly: "0.0301"}}}}}}
    - {{id: {GROW_SIZE}, name: k8s-4c-8g, cpu: 4, ramMB: 8192, diskGB: 160,
       prices: {{{DC}: {{monthly: "40.00", hourly: "0.0548"}}}}}}
    - {{id: {BIG_SIZE}, name: k8s-8c-16g, cpu: 8, ramMB: 16384, diskGB: 320,
       prices: {{{DC}: {{monthly: "100.00", hourly: "0.1370"}}}}}}
  cluster:
    identifier: 9a0c2d4e-6f81-4b3a-a5c7-e9d1f3b5a7c9
    name: grow
    datacenter: {DC}
    maxWorkers: 8
  nodeGroups:
    - {{name: general, sizeId: {BIG_SIZE}, workers: {workers}}}
  bootDelaySeconds: 60
  podStartDelaySeconds: 5
  pageSize: 2
  auth:
    clientId: grow-client
    clientSecret: grow-secret-8d1e2f3a
    tokenTtlSeconds: 3600
---
apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      containers:
        - name: web
          image: nginx:1.27
          resources:
            requests: {{cpu: 1000m, memory: 512Mi}}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: web
  namespace: shop
spec:
  maxUnavailable: 4
  selector:
    matchLabels: {{app: web}}
"""
