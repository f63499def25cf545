"""VllmModel wiring under Pulumi mocks: parents, dependencies and the autoscaler per mode."""

from __future__ import annotations

from tests.conftest import minimal_document, render_document, resources_of

COMPONENT = "vllm-platform:index:VllmModel::llama-8b"


def test_children_are_parented_to_the_model_component() -> None:
    rendering = render_document(minimal_document())
    children = [r for r in rendering.resources if r.parent == COMPONENT]
    assert {r.type for r in children} == {
        "kubernetes:core/v1:ServiceAccount",
        "kubernetes:apps/v1:Deployment",
        "kubernetes:core/v1:Service",
        "kubernetes:monitoring.coreos.com/v1:ServiceMonitor",
        "kubernetes:policy/v1:PodDisruptionBudget",
        "kubernetes:keda.sh/v1alpha1:ScaledObject",
    }


def test_deployment_waits_for_its_service_account_and_token_secret() -> None:
    rendering = render_document(minimal_document(hfToken={"secure": "AAABAtoken"}))
    deployment = resources_of(rendering, "kubernetes:apps/v1:Deployment")[0]
    assert "kubernetes:core/v1:Secret::hf-token" in deployment.dependencies
    assert "kubernetes:core/v1:ServiceAccount::llama-8b" in deployment.dependencies


def test_scaled_object_is_created_after_its_deployment() -> None:
    rendering = render_document(minimal_document())
    scaled = resources_of(rendering, "kubernetes:keda.sh/v1alpha1:ScaledObject")[0]
    assert "kubernetes:apps/v1:Deployment::llama-8b" in scaled.dependencies


def test_hpa_mode_makes_an_hpa_and_no_scaled_object() -> None:
    document = minimal_document()
    document["config"]["vllm-platform:models"][0]["autoscaling"] = {"mode": "hpa-cpu"}
    rendering = render_document(document)
    assert resources_of(rendering, "kubernetes:autoscaling/v2:HorizontalPodAutoscaler")
    assert not resources_of(rendering, "kubernetes:keda.sh/")


def test_a_model_at_zero_adds_its_route_and_entry_service() -> None:
    document = minimal_document()
    document["config"]["vllm-platform:models"][0]["replicas"] = {"min": 0, "max": 2}
    rendering = render_document(document)
    children = [(r.type, r.name) for r in rendering.resources if r.parent == COMPONENT]
    assert ("kubernetes:http.keda.sh/v1beta1:InterceptorRoute", "llama-8b") in children
    services = sorted(name for type_, name in children if type_ == "kubernetes:core/v1:Service")
    assert services == ["llama-8b", "llama-8b-backend"]


def test_without_observability_there_is_no_service_monitor_unless_asked() -> None:
    document = minimal_document(observability={"enabled": False, "externalPrometheusUrl": "http://prometheus.shared.svc:9090"})
    assert not resources_of(render_document(document), "kubernetes:monitoring.coreos.com/v1:ServiceMonitor")
    document["config"]["vllm-platform:observability"]["serviceMonitors"] = True
    assert resources_of(render_document(document), "kubernetes:monitoring.coreos.com/v1:ServiceMonitor")


def test_a_simulated_model_outputs_no_weights_and_no_cold_start() -> None:
    """The simulator loads nothing: the same model on GPUs has both keys, the simulated one neither."""
    on_gpus = render_document(minimal_document()).outputs["models"]["llama-8b"]
    assert on_gpus["weights"]["source"] == "hub" and set(on_gpus["coldStart"]) == {"fromNodeSeconds", "fromZeroSeconds", "phases"}
    simulated = render_document(minimal_document(simulateAccelerators=True)).outputs["models"]["llama-8b"]
    assert "weights" not in simulated and "coldStart" not in simulated
    assert set(on_gpus) - set(simulated) == {"weights", "coldStart"}
