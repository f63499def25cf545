"""The cluster layer: an EKS cluster with GPU node pools, or an existing cluster; and the provider for it.

Created mode (no `cluster.existing`): network, KMS key, EKS control plane with access entries,
add-ons, the system node group (`aws.nodes`), the device plugin, Karpenter for the GPU pools
(`components.capacity`), and a kubernetes.Provider that authenticates with `aws eks get-token`.
Existing mode: no AWS resource at all; a provider from the referenced kubeconfig or context.
"""

from __future__ import annotations

import json
from typing import Any, Optional

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from vllm_platform import names
from vllm_platform.aws import iam, load_balancer, nodes
from vllm_platform.aws.addons import ADDONS_AFTER_NODES, ADDONS_BEFORE_NODES, eks_addon, pod_identity_role, service_role
from vllm_platform.aws.eks import (
    ACCESS_POLICIES,
    CLUSTER_POLICIES,
    CONTROL_PLANE_LOG_RETENTION_DAYS,
    CONTROL_PLANE_LOGS,
    EBS_CSI_POLICY,
    KMS_DELETION_WINDOW_DAYS,
    NODE_POLICIES,
    access_grants,
    kubeconfig,
    principal_slug,
    resource_tags,
    unadmitted_caller_problem,
)
from vllm_platform.aws.network import create_network, network_outputs
from vllm_platform.catalog import PRICE_SOURCE
from vllm_platform.components.capacity import AwsContext, GpuCapacity
from vllm_platform.components.delivery import ModelDelivery, existing_cluster_sources
from vllm_platform.components.helm import helm_release
from vllm_platform.config.cluster import ExistingCluster
from vllm_platform.contract import (
    KARPENTER_SERVICE_ACCOUNT,
    KUBE_SYSTEM,
    LOAD_BALANCER_CONTROLLER_SERVICE_ACCOUNT,
    MONITORING_NAMESPACE,
)
from vllm_platform.k8s import alerting, cluster_addons
from vllm_platform.pins import ALERTMANAGER_SERVICE_ACCOUNT, AWS_LOAD_BALANCER_CONTROLLER, NVIDIA_DEVICE_PLUGIN
from vllm_platform.plan.plans import Plan


def cost_outputs(plan: Plan) -> dict[str, Any]:
    return {
        "gpuPools": nodes.gpu_pools_summary(plan),
        "maxHourlyGpuCostUsd": nodes.hourly_gpu_cost_usd(plan, "maxHourlyCostUsd"),
        "idleHourlyGpuCostUsd": nodes.hourly_gpu_cost_usd(plan, "idleHourlyCostUsd"),
        "gpuPriceSource": PRICE_SOURCE,
    }


def delivery_outputs(bucket: Any, registry: Any) -> dict[str, Any]:
    return {"modelCacheBucket": bucket, "imageRegistry": registry}


def _referenced_cluster_name(name: Any, reference: str) -> str:
    """The referenced stack's clusterName output, which names the cluster when cluster.name does not."""
    if not isinstance(name, str) or not name:
        raise pulumi.RunError(
            f"cluster.name: not set, and stack {reference} (cluster.existing.stackReference) has no clusterName output; "
            "set cluster.name to the cluster's name"
        )
    return name


class PlatformCluster(pulumi.ComponentResource):
    """Contract: `provider` is the kubernetes.Provider every Kubernetes resource goes through;
    `ready` lists what must exist before workloads are created (node groups, add-ons);
    `cache_bucket` names the model cache's bucket and `image_registry` the registry Docker Hub images are
    pulled through (each None where there is none); `region` the cluster's AWS region (None on an existing
    cluster whose stack names no aws:region); `kubeconfig` (secret) and `context` what `provider` reaches the
    cluster with, for the rollout watch; `load_balancer_controller` what must exist before a Service asks
    for an NLB (empty where the stack makes none); `outputs` are the stack outputs this layer owns (see
    README, "Stack outputs")."""

    provider: k8s.Provider
    ready: list[pulumi.Resource]
    cache_bucket: Any
    image_registry: Any
    region: Optional[str]
    kubeconfig: Optional[pulumi.Output[str]]
    context: Optional[str]
    load_balancer_controller: list[pulumi.Resource]
    outputs: dict[str, Any]

    def __init__(self, name: str, plan: Plan, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("vllm-platform:index:Cluster", name, None, opts)
        if plan.config.cluster.existing is not None:
            self._use_existing(plan, plan.config.cluster.existing)
        else:
            self._create(plan)
        self.register_outputs(self.outputs)

    def _use_existing(self, plan: Plan, existing: ExistingCluster) -> None:
        kubeconfig_value: Optional[pulumi.Output[Any]] = None
        cluster_name: pulumi.Input[str] = plan.config.cluster.name or ""
        if existing.stack_reference:
            reference = pulumi.StackReference(existing.stack_reference, opts=pulumi.ResourceOptions(parent=self))
            # require_output: a missing output must fail, not fall back to whatever ~/.kube/config points at.
            kubeconfig_value = pulumi.Output.secret(reference.require_output(existing.kubeconfig_output))
            if plan.config.cluster.name is None:
                cluster_name = reference.get_output("clusterName").apply(
                    lambda name, ref=existing.stack_reference: _referenced_cluster_name(name, ref)
                )
        elif existing.kubeconfig:
            kubeconfig_value = pulumi.Output.secret(existing.kubeconfig)
        self.kubeconfig = kubeconfig_value.apply(_as_text) if kubeconfig_value is not None else None
        self.context = existing.context
        self.provider = k8s.Provider(
            "existing", kubeconfig=self.kubeconfig, context=self.context, opts=pulumi.ResourceOptions(parent=self)
        )
        self.ready = []
        self.load_balancer_controller = []
        self.cache_bucket, self.image_registry = existing_cluster_sources(plan)
        # The stack's aws:region, where it names one; the program asks AWS nothing on an existing cluster.
        self.region = pulumi.Config("aws").get("region")
        self.outputs = {"clusterName": cluster_name, **cost_outputs(plan), **delivery_outputs(self.cache_bucket, self.image_registry)}
        if kubeconfig_value is not None:
            self.outputs["kubeconfig"] = kubeconfig_value

    def _create(self, plan: Plan) -> None:
        cluster = plan.config.cluster
        assert cluster.name is not None, "a created cluster is named: the config requires it"
        tags = resource_tags(cluster)
        child = pulumi.ResourceOptions(parent=self)
        # The partition's own DNS suffix, amazonaws.com.cn in China: the domain of its service endpoints.
        aws_partition = aws.get_partition()
        partition, domain = aws_partition.partition, aws_partition.dns_suffix
        region = self.region = aws.get_region().region
        caller = aws.get_caller_identity()
        # An assumed-role session ARN cannot hold an access entry; its role's ARN can.
        problem = unadmitted_caller_problem(cluster, aws.iam.get_session_context(arn=caller.arn).issuer_arn)
        if problem:
            raise pulumi.RunError(problem)
        # The gateway's NLB, which only a created cluster has, is in this region: so must its certificate be.
        problem = plan.config.gateway.certificate_problem(partition, region) if plan.gateway is not None else None
        if problem:
            raise pulumi.RunError(problem)

        network = create_network(cluster, plan.pools, self, tags, region)
        key = aws.kms.Key(
            "secrets",
            description=f"EKS {cluster.name}: Kubernetes Secrets (envelope encryption), the GPU nodes' volumes, the model cache",
            enable_key_rotation=True,
            deletion_window_in_days=KMS_DELETION_WINDOW_DAYS,
            policy=json.dumps(iam.platform_key_policy(partition, domain, caller.account_id, region)),
            tags=tags,
            opts=pulumi.ResourceOptions(parent=self, protect=cluster.protect),
        )
        cluster_role, cluster_policies = service_role("cluster", iam.EKS_SERVICE, CLUSTER_POLICIES, partition, tags, self)
        encryption_grant = aws.iam.RolePolicy(
            names.logical_name(names.IAM_ROLE_POLICY, "cluster-secrets-encryption"),
            role=cluster_role.id,
            policy=key.arn.apply(lambda arn: json.dumps(iam.secrets_encryption_policy(arn))),
            opts=child,
        )
        # Named as EKS names the group it writes the control plane's logs to, so no name of the program's own: from
        # the configured cluster name, a DNS-1123 label of at most 63 characters (within the EKS and log group limits).
        log_group = aws.cloudwatch.LogGroup(
            "control-plane",
            name=f"/aws/eks/{cluster.name}/cluster",
            retention_in_days=CONTROL_PLANE_LOG_RETENTION_DAYS,
            tags=tags,
            opts=child,
        )
        endpoint = cluster.endpoint
        eks = aws.eks.Cluster(
            "eks",
            name=cluster.name,
            version=cluster.kubernetes_version,
            role_arn=cluster_role.arn,
            vpc_config=aws.eks.ClusterVpcConfigArgs(
                subnet_ids=network.private_subnet_ids,
                endpoint_private_access=endpoint.private_access,
                endpoint_public_access=bool(endpoint.public_access_cidrs),
                public_access_cidrs=endpoint.public_access_cidrs or None,
            ),
            access_config=aws.eks.ClusterAccessConfigArgs(
                authentication_mode="API",
                # Every grant comes from the config's access entries below; a creator's implicit one would
                # outlive the config and clash with an explicit entry for the same principal.
                bootstrap_cluster_creator_admin_permissions=False,
            ),
            encryption_config=aws.eks.ClusterEncryptionConfigArgs(
                provider=aws.eks.ClusterEncryptionConfigProviderArgs(key_arn=key.arn), resources=["secrets"]
            ),
            enabled_cluster_log_types=CONTROL_PLANE_LOGS,
            upgrade_policy=aws.eks.ClusterUpgradePolicyArgs(support_type=cluster.support_type),
            # The core add-ons come as EKS managed add-ons below, not as unmanaged copies to fight.
            bootstrap_self_managed_addons=False,
            # AWS's own guard as well as Pulumi's: it also stops a delete from the console, the CLI or another tool.
            deletion_protection=cluster.protect,
            tags=tags,
            opts=pulumi.ResourceOptions(
                parent=self,
                protect=cluster.protect,
                depends_on=[*cluster_policies, encryption_grant, log_group],
            ),
        )

        access = []
        for role, principal in access_grants(cluster):
            name = f"{role}-{principal_slug(principal)}"
            entry = aws.eks.AccessEntry(
                name, cluster_name=eks.name, principal_arn=principal, type="STANDARD", tags=tags, opts=child
            )
            access.append(
                aws.eks.AccessPolicyAssociation(
                    name,
                    cluster_name=eks.name,
                    principal_arn=principal,
                    policy_arn=f"arn:{partition}:eks::aws:cluster-access-policy/{ACCESS_POLICIES[role]}",
                    access_scope=aws.eks.AccessPolicyAssociationAccessScopeArgs(type="cluster"),
                    opts=pulumi.ResourceOptions(parent=self, depends_on=[entry]),
                )
            )

        config_text = pulumi.Output.all(eks.name, eks.endpoint, eks.certificate_authority.data).apply(
            lambda args: json.dumps(kubeconfig(args[0], args[1], args[2], region))
        )
        kubeconfig_secret = self.kubeconfig = pulumi.Output.secret(config_text)
        self.context = None
        # Every Kubernetes call waits for the access grants: before them the API server answers 401.
        self.provider = k8s.Provider(
            "eks", kubeconfig=kubeconfig_secret, opts=pulumi.ResourceOptions(parent=self, depends_on=access)
        )

        node_role, node_policies = service_role("node", iam.EC2_SERVICE, NODE_POLICIES, partition, tags, self)
        early_addons = [
            eks_addon(addon, eks.name, cluster.kubernetes_version, tags, child) for addon in ADDONS_BEFORE_NODES
        ]
        before_nodes = [*node_policies, *early_addons]
        system = nodes.system_node_group(
            eks.name, eks.version, cluster.system_nodes, node_role.arn, network.private_subnet_ids, tags, self, before_nodes
        )
        ebs_role, ebs_identity = pod_identity_role(
            "ebs-csi-driver", eks.name, KUBE_SYSTEM, cluster_addons.EBS_CSI_SERVICE_ACCOUNT, tags, self
        )
        ebs_policy = aws.iam.RolePolicyAttachment(
            "ebs-csi-driver",
            role=ebs_role.name,
            policy_arn=iam.managed_policy_arn(partition, EBS_CSI_POLICY),
            opts=child,
        )
        late_addons = []
        for addon in ADDONS_AFTER_NODES:
            after = [system, ebs_identity, ebs_policy] if addon == "aws-ebs-csi-driver" else [system]
            late_addons.append(
                eks_addon(
                    addon, eks.name, cluster.kubernetes_version, tags, pulumi.ResourceOptions(parent=self, depends_on=after)
                )
            )

        publish_grants = self._alert_publishing(plan, eks.name, tags)
        self.load_balancer_controller, load_balancer_role = self._load_balancer_controller(
            plan, partition, region, eks.name, network.vpc_id, tags, [system]
        )
        storage = self._storage_class(late_addons)
        device_plugin = helm_release(
            NVIDIA_DEVICE_PLUGIN,
            cluster_addons.device_plugin_values(),
            pulumi.ResourceOptions(parent=self, provider=self.provider, depends_on=[system]),
        )
        capacity = GpuCapacity(
            "gpu-capacity",
            plan,
            AwsContext(partition, domain, region, caller.account_id, eks, key),
            network,
            self.provider,
            tags,
            after=[system, *late_addons],
            opts=child,
        )
        delivery = ModelDelivery(
            "model-delivery", plan, partition, domain, region, caller.account_id, eks.name, key, capacity.node_role, node_role, tags,
            opts=child,
        )
        self.cache_bucket, self.image_registry = delivery.bucket_name, delivery.registry
        # Pod Identity credentials are injected when a pod starts: the associations must exist before the models.
        # Not a GPU node: one EC2 cannot supply (a p4d, InsufficientInstanceCapacity) holds only the pods that
        # wait for it, Pending, while the rest of the stack (system nodes, observability) comes up.
        self.ready = [
            system, *early_addons, *late_addons, storage, device_plugin, *capacity.ready, *access,
            *delivery.ready, *publish_grants,
        ]  # fmt: skip
        self.outputs = {
            "clusterName": eks.name,
            "clusterEndpoint": eks.endpoint,
            "kubeconfig": kubeconfig_secret,
            "oidcIssuerUrl": eks.identities.apply(lambda identities: identities[0].oidcs[0].issuer),
            "podIdentity": {
                "agentAddon": "eks-pod-identity-agent",
                "roleArns": {
                    f"{KUBE_SYSTEM}/{KARPENTER_SERVICE_ACCOUNT}": capacity.controller_role.arn,
                    f"{KUBE_SYSTEM}/{cluster_addons.EBS_CSI_SERVICE_ACCOUNT}": ebs_role.arn,
                    **({f"{KUBE_SYSTEM}/{LOAD_BALANCER_CONTROLLER_SERVICE_ACCOUNT}": load_balancer_role.arn} if load_balancer_role else {}),
                    **{account: role.arn for account, role in delivery.roles.items()},
                },
            },
            "nodeRoleArn": node_role.arn,
            "gpuNodeRoleArn": capacity.node_role.arn,
            **delivery_outputs(self.cache_bucket, self.image_registry),
            **network_outputs(network),
            **cost_outputs(plan),
        }

    def _alert_publishing(self, plan: Plan, cluster_name: pulumi.Input[str], tags: dict[str, str]) -> list[pulumi.Resource]:
        """Alertmanager's role for its SNS receivers: publish to those topics, nothing else."""
        topics = alerting.sns_topics(plan.config.observability.alertmanager)
        if not topics or not plan.config.observability.alertmanager_enabled:
            return []
        name = "alertmanager-sns"
        role, association = pod_identity_role(name, cluster_name, MONITORING_NAMESPACE, ALERTMANAGER_SERVICE_ACCOUNT, tags, self)
        policy = aws.iam.RolePolicy(
            names.logical_name(names.IAM_ROLE_POLICY, name),
            role=role.id,
            policy=json.dumps(iam.sns_publish_policy(topics)),
            opts=pulumi.ResourceOptions(parent=self),
        )
        return [association, policy]

    def _load_balancer_controller(
        self,
        plan: Plan,
        partition: str,
        region: str,
        cluster_name: pulumi.Output[str],
        vpc_id: pulumi.Input[str],
        tags: dict[str, str],
        after: list[pulumi.Resource],
    ) -> tuple[list[pulumi.Resource], Optional[aws.iam.Role]]:
        """The AWS Load Balancer Controller, for the gateway's NLB: its Pod Identity role with the published
        policy scoped to this cluster, and its release on the system nodes."""
        if plan.gateway is None or not plan.gateway.load_balanced:
            return [], None
        name = str(plan.config.cluster.name)
        role, association = pod_identity_role(
            "aws-load-balancer-controller", cluster_name, KUBE_SYSTEM, LOAD_BALANCER_CONTROLLER_SERVICE_ACCOUNT, tags, self
        )
        policy = aws.iam.RolePolicy(
            names.logical_name(names.IAM_ROLE_POLICY, "aws-load-balancer-controller"),
            role=role.id,
            policy=json.dumps(load_balancer.controller_policy(partition, name)),
            opts=pulumi.ResourceOptions(parent=self),
        )
        release = helm_release(
            AWS_LOAD_BALANCER_CONTROLLER,
            cluster_addons.load_balancer_controller_values(name, region, vpc_id),  # type: ignore[arg-type]
            pulumi.ResourceOptions(parent=self, provider=self.provider, depends_on=[*after, association, policy]),
        )
        return [release], role

    def _storage_class(self, depends_on: list[pulumi.Resource]) -> k8s.storage.v1.StorageClass:
        manifest = cluster_addons.gp3_storage_class()
        return k8s.storage.v1.StorageClass(
            cluster_addons.GP3_STORAGE_CLASS,
            metadata=manifest["metadata"],
            provisioner=manifest["provisioner"],
            parameters=manifest["parameters"],
            reclaim_policy=manifest["reclaimPolicy"],
            volume_binding_mode=manifest["volumeBindingMode"],
            allow_volume_expansion=manifest["allowVolumeExpansion"],
            opts=pulumi.ResourceOptions(parent=self, provider=self.provider, depends_on=depends_on),
        )


def _as_text(value: Any) -> str:
    """A stack output may hold the kubeconfig as text or as the parsed object."""
    return value if isinstance(value, str) else json.dumps(value)
