"""VllmModel: the Kubernetes resources that serve one model, made from the pure builders in `vllm_platform.k8s`."""

from __future__ import annotations

from typing import Any, Optional, Sequence

import pulumi
import pulumi_kubernetes as k8s

from vllm_platform.components.rollout import Staging, watched_input
from vllm_platform.contract import SERVING_PORT
from vllm_platform.k8s import autoscaling, staging, workload
from vllm_platform.k8s.monitoring import service_monitor
from vllm_platform.plan.plans import ModelPlan, Plan


def custom_resource(name: str, manifest: dict[str, Any], opts: pulumi.ResourceOptions) -> k8s.apiextensions.CustomResource:
    return k8s.apiextensions.CustomResource(
        name,
        api_version=manifest["apiVersion"],
        kind=manifest["kind"],
        metadata=manifest["metadata"],
        spec=manifest["spec"],
        opts=opts,
    )


class VllmModel(pulumi.ComponentResource):
    """One model: ServiceAccount, Deployment, Service, ServiceMonitor, autoscaler and PodDisruptionBudget;
    for a model that scales to zero also the InterceptorRoute and the entry Service that leads to it.

    `prometheus_url` is where the KEDA trigger queries; `http_scaler_address` and `interceptor_host`
    are the KEDA HTTP add-on's scaler and interceptor; `crd_dependencies` are the resources that
    install the ServiceMonitor, ScaledObject and InterceptorRoute CRDs, so those objects come after them.
    `deployment` and `rollout` are what the stack's Rollouts resource waits on (components/rollout.py).
    `weights_uri`, `cache_bucket` and `image` are what the plan cannot name: where the weights stream from (the
    stack's own cache bucket), and the registry the image comes through; `region` is the AWS region streaming
    and staging talk to S3 in. A model staged into the cache rolls only after its staging Job has completed, which
    the program waits for through the cluster that `kubeconfig` (secret) or `context` reaches.
    """

    def __init__(
        self,
        plan: Plan,
        model: ModelPlan,
        prometheus_url: pulumi.Input[str],
        weights_uri: pulumi.Input[str],
        http_scaler_address: pulumi.Input[str] = "",
        interceptor_host: pulumi.Input[str] = "",
        hf_token_secret: Optional[k8s.core.v1.Secret] = None,
        crd_dependencies: Sequence[pulumi.Resource] = (),
        cache_bucket: pulumi.Input[str] | None = None,
        image: pulumi.Input[str] | None = None,
        region: Optional[str] = None,
        kubeconfig: Optional[pulumi.Input[str]] = None,
        context: Optional[str] = None,
        opts: Optional[pulumi.ResourceOptions] = None,
    ):
        super().__init__("vllm-platform:index:VllmModel", model.name, None, opts)
        name = model.name
        child = pulumi.ResourceOptions(parent=self)
        after_crds = pulumi.ResourceOptions(parent=self, depends_on=list(crd_dependencies))

        account = workload.service_account(model)
        service_account = k8s.core.v1.ServiceAccount(
            name,
            metadata=account["metadata"],
            automount_service_account_token=account["automountServiceAccountToken"],
            opts=child,
        )
        hf_token = hf_token_secret is not None
        token_dependency = [hf_token_secret] if hf_token_secret is not None else []
        staged = self._staging(model, cache_bucket, region, hf_token, token_dependency, (kubeconfig, context))
        manifest = workload.deployment(model, hf_token, weights_uri, image, region)
        self.deployment = k8s.apps.v1.Deployment(
            name,
            metadata=manifest["metadata"],
            spec=manifest["spec"],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[service_account, *token_dependency, *staged]),
        )
        # What the stack's Rollouts resource waits for: this Deployment's spec, and Karpenter's word on its pool.
        karpenter_pool = model.pool.name if plan.runs_karpenter and model.pool is not None else None
        self.rollout = watched_input(model.namespace, manifest["spec"], model.rollout_timeout_seconds, karpenter_pool)
        service = workload.service(model)
        self.service = k8s.core.v1.Service(
            service["metadata"]["name"], metadata=service["metadata"], spec=service["spec"], opts=child
        )
        if plan.config.observability.creates_service_monitors:
            custom_resource(name, service_monitor(plan, model), after_crds)
        budget = workload.pod_disruption_budget(model)
        k8s.policy.v1.PodDisruptionBudget(name, metadata=budget["metadata"], spec=budget["spec"], opts=child)

        scaled_after: list[pulumi.Resource] = [self.deployment, *crd_dependencies]
        if model.scales_to_zero:
            entry = workload.interceptor_entry_service(model, interceptor_host)
            k8s.core.v1.Service(name, metadata=entry["metadata"], spec=entry["spec"], opts=child)
            # The route must exist first: a ScaledObject naming an unknown route falls back to CPU metrics.
            route_opts = pulumi.ResourceOptions(parent=self, depends_on=[self.service, *crd_dependencies])
            scaled_after.append(custom_resource(name, autoscaling.interceptor_route(model), route_opts))

        if model.keda:
            custom_resource(
                name,
                autoscaling.scaled_object(model, prometheus_url, http_scaler_address),
                pulumi.ResourceOptions(parent=self, depends_on=scaled_after),
            )
        else:
            hpa = autoscaling.horizontal_pod_autoscaler(model)
            k8s.autoscaling.v2.HorizontalPodAutoscaler(
                name,
                metadata=hpa["metadata"],
                spec=hpa["spec"],
                opts=pulumi.ResourceOptions(parent=self, depends_on=[self.deployment]),
            )

        self.outputs = {
            "serviceUrl": workload.service_url(model),
            "servedModelName": model.served_name,
            # The `model` a client sends through the gateway's endpoint; None where the stack has no gateway.
            "gatewayModelName": model.served_name if plan.gateway is not None else None,
            "port": SERVING_PORT,
            # A client of a model at zero replicas waits for a node and the model's load on its first request.
            "scalesToZero": model.scales_to_zero,
        }
        # The simulator loads no weights and has no cold start to estimate: it has neither key.
        if not model.simulated:
            assert model.cold_start is not None, "a model on GPUs has its estimate"
            weights = {"source": model.weights.source.value, "uri": weights_uri}
            self.outputs |= {"weights": weights, "coldStart": model.cold_start.output()}
        self.register_outputs(self.outputs)

    def _staging(
        self,
        model: ModelPlan,
        bucket: pulumi.Input[str] | None,
        region: Optional[str],
        hf_token: bool,
        token_dependency: list[k8s.core.v1.Secret],
        cluster: tuple[Optional[pulumi.Input[str]], Optional[str]],
    ) -> list[pulumi.Resource]:
        """The staging Job of a model served from the cache, what it needs, and the wait for it: `pulumi up` waits for
        it to complete, and a failed copy fails the update with the Job's reason and the copy's own."""
        plan = model.weights.staging
        if plan is None:
            return []
        assert bucket is not None, "a staged model's cache has a bucket"
        child = pulumi.ResourceOptions(parent=self)
        account = staging.service_account(model, plan)
        service_account = k8s.core.v1.ServiceAccount(
            plan.service_account, metadata=account["metadata"], automount_service_account_token=False, opts=child
        )
        script = staging.script_config_map(model, plan)
        config_map = k8s.core.v1.ConfigMap(plan.job_name, metadata=script["metadata"], data=script["data"], opts=child)
        manifest = staging.job(model, plan, bucket, region, hf_token)
        job = k8s.batch.v1.Job(
            plan.job_name,
            metadata=manifest["metadata"],
            spec=manifest["spec"],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[service_account, config_map, *token_dependency]),
        )
        uid = job.metadata.apply(lambda meta: (meta or {}).get("uid") or "")
        wait = Staging(
            plan.job_name, model.name, model.namespace, plan.job_name, uid, staging.wait_seconds(plan), *cluster,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[job]),
        )  # fmt: skip
        return [job, wait]
