package main

// Checks of the decoded objects, alone and together: what the API server's validation, KEDA's
// admission webhook and the chart's own promises (secrets by reference, termination grace over
// the shutdown grace, at most one consumer per partition) require.

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	kedav1alpha1 "github.com/kedacore/keda/v2/apis/keda/v1alpha1"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Report is what the validator prints (JSON): the objects, facts the tests assert, the errors.
type Report struct {
	Objects       []string       `json:"objects"`
	Consumers     []ConsumerFact `json:"consumers"`
	ScaledObjects []ScaledFact   `json:"scaledObjects"`
	API           *APIFact       `json:"api,omitempty"`
	Rules         []RuleFact     `json:"prometheusRules"`
	Errors        []string       `json:"errors"`
}

type ConsumerFact struct {
	Deployment                    string            `json:"deployment"`
	Model                         string            `json:"model"`
	GPUs                          int64             `json:"gpus"`
	Device                        string            `json:"device"`
	RunnerGPUs                    string            `json:"runnerGpus"`
	ShutdownGraceMs               int64             `json:"shutdownGraceMs"`
	TerminationGracePeriodSeconds int64             `json:"terminationGracePeriodSeconds"`
	NodeSelector                  map[string]string `json:"nodeSelector"`
	Tolerations                   int               `json:"tolerations"`
	Partitions                    int64             `json:"partitions"`
	Replicas                      *int32            `json:"replicas"`
	HasPDB                        bool              `json:"hasPdb"`
	Gateway                       string            `json:"gateway"`
	GatewayService                string            `json:"gatewayService"`
}

type ScaledFact struct {
	Name                   string   `json:"name"`
	Target                 string   `json:"target"`
	MinReplicas            int32    `json:"minReplicas"`
	MaxReplicas            int32    `json:"maxReplicas"`
	LagThreshold           int64    `json:"lagThreshold"`
	ActivationLagThreshold int64    `json:"activationLagThreshold"`
	Topics                 []string `json:"topics"`
	ConsumerGroup          string   `json:"consumerGroup"`
	Formula                string   `json:"formula"`
}

type APIFact struct {
	Deployment    string `json:"deployment"`
	HPAMin        int32  `json:"hpaMin"`
	HPAMax        int32  `json:"hpaMax"`
	ReadinessPath string `json:"readinessPath"`
	LivenessPath  string `json:"livenessPath"`
	ServicePort   int32  `json:"servicePort"`
	HasPDB        bool   `json:"hasPdb"`
	ReplicasUnset bool   `json:"replicasUnset"`
}

type checker struct {
	objects []Object
	report  *Report
}

func (c *checker) errorf(o Object, format string, args ...any) {
	c.report.Errors = append(c.report.Errors, o.String()+": "+fmt.Sprintf(format, args...))
}

func each[T any](objects []Object) []struct {
	Object
	V *T
} {
	var out []struct {
		Object
		V *T
	}
	for _, o := range objects {
		if v, ok := o.Value.(*T); ok {
			out = append(out, struct {
				Object
				V *T
			}{o, v})
		}
	}
	return out
}

func check(objects []Object, report *Report) {
	c := &checker{objects: objects, report: report}
	seen := map[string]Object{}
	for _, o := range objects {
		report.Objects = append(report.Objects, o.Kind+" "+o.Name)
		if previous, twice := seen[o.Kind+"/"+o.Name]; twice {
			c.errorf(o, "rendered twice (also %s)", previous.Source)
		}
		seen[o.Kind+"/"+o.Name] = o
		c.metadata(o)
	}
	for _, s := range each[corev1.Secret](objects) {
		c.errorf(s.Object, "the chart renders a Secret: credentials must stay references to Secrets made outside it")
	}
	for _, d := range each[appsv1.Deployment](objects) {
		c.deployment(d.Object, d.V)
	}
	for _, s := range each[corev1.Service](objects) {
		c.service(s.Object, s.V)
	}
	for _, p := range each[policyv1.PodDisruptionBudget](objects) {
		c.pdb(p.Object, p.V)
	}
	for _, h := range each[autoscalingv2.HorizontalPodAutoscaler](objects) {
		c.hpa(h.Object, h.V)
	}
	for _, s := range each[kedav1alpha1.ScaledObject](objects) {
		c.scaledObject(s.Object, s.V)
	}
	for _, r := range each[monitoringv1.PrometheusRule](objects) {
		c.prometheusRule(r.Object, r.V)
	}
	c.facts()
}

func (c *checker) metadata(o Object) {
	accessor, ok := o.Value.(metav1.Object)
	if !ok {
		return
	}
	for _, msg := range validation.IsDNS1123Subdomain(accessor.GetName()) {
		c.errorf(o, "name: %s", msg)
	}
	if _, isService := o.Value.(*corev1.Service); isService {
		for _, msg := range validation.IsDNS1035Label(accessor.GetName()) {
			c.errorf(o, "Service name: %s", msg)
		}
	}
	c.labels(o, "metadata.labels", accessor.GetLabels())
}

func (c *checker) labels(o Object, where string, set map[string]string) {
	for key, value := range set {
		for _, msg := range validation.IsQualifiedName(key) {
			c.errorf(o, "%s key %q: %s", where, key, msg)
		}
		for _, msg := range validation.IsValidLabelValue(value) {
			c.errorf(o, "%s[%q] value %q: %s", where, key, value, msg)
		}
	}
}

// deployments by name, and the pods' labels of each.
func (c *checker) deploymentNamed(name string) *appsv1.Deployment {
	for _, d := range each[appsv1.Deployment](c.objects) {
		if d.V.Name == name {
			return d.V
		}
	}
	return nil
}

func (c *checker) selects(o Object, selector *metav1.LabelSelector) []*appsv1.Deployment {
	s, err := metav1.LabelSelectorAsSelector(selector)
	if err != nil {
		c.errorf(o, "selector: %v", err)
		return nil
	}
	if s.Empty() {
		c.errorf(o, "selector is empty: it would select every pod of the namespace")
		return nil
	}
	var matched []*appsv1.Deployment
	for _, d := range each[appsv1.Deployment](c.objects) {
		if s.Matches(labels.Set(d.V.Spec.Template.Labels)) {
			matched = append(matched, d.V)
		}
	}
	return matched
}

var secretLike = []string{"SECRET", "PASSWORD", "PEPPER", "TOKEN", "ACCESS_KEY", "REDIS_URL"}

func (c *checker) deployment(o Object, d *appsv1.Deployment) {
	c.labels(o, "spec.template.metadata.labels", d.Spec.Template.Labels)
	if d.Spec.Selector == nil {
		c.errorf(o, "spec.selector is required")
	} else if matched := c.selects(o, d.Spec.Selector); !slices.Contains(matched, d) {
		c.errorf(o, "spec.selector does not match its own pod template's labels")
	} else if len(matched) > 1 {
		c.errorf(o, "spec.selector also matches the pods of another Deployment")
	}
	pod := d.Spec.Template.Spec
	volumes := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		volumes[v.Name] = v
		if v.ConfigMap != nil && !c.hasConfigMap(v.ConfigMap.Name) {
			c.errorf(o, "volume %s names ConfigMap %s, which the chart does not render", v.Name, v.ConfigMap.Name)
		}
	}
	if len(pod.Containers) == 0 {
		c.errorf(o, "no containers")
	}
	for _, container := range pod.Containers {
		c.container(o, container, volumes)
	}
	if env := envOf(pod, "SHUTDOWN_GRACE_MS"); env != "" {
		grace, err := strconv.ParseInt(env, 10, 64)
		if err != nil {
			c.errorf(o, "SHUTDOWN_GRACE_MS %q is not a whole number of milliseconds", env)
		} else if pod.TerminationGracePeriodSeconds == nil || *pod.TerminationGracePeriodSeconds*1000 <= grace {
			c.errorf(o, "terminationGracePeriodSeconds must exceed SHUTDOWN_GRACE_MS (%d ms): Kubernetes would SIGKILL a consumer still finishing its jobs", grace)
		}
	}
}

func (c *checker) hasConfigMap(name string) bool {
	for _, m := range each[corev1.ConfigMap](c.objects) {
		if m.V.Name == name {
			return true
		}
	}
	return false
}

func envOf(pod corev1.PodSpec, name string) string {
	for _, container := range pod.Containers {
		for _, e := range container.Env {
			if e.Name == name {
				return e.Value
			}
		}
	}
	return ""
}

func (c *checker) container(o Object, container corev1.Container, volumes map[string]corev1.Volume) {
	if container.Image == "" || strings.HasSuffix(container.Image, ":") {
		c.errorf(o, "container %s: image %q has no tag", container.Name, container.Image)
	}
	ports := map[string]bool{}
	for _, p := range container.Ports {
		if p.Name != "" {
			ports[p.Name] = true
			for _, msg := range validation.IsValidPortName(p.Name) {
				c.errorf(o, "container %s port name %q: %s", container.Name, p.Name, msg)
			}
		}
	}
	for _, probe := range []*corev1.Probe{container.StartupProbe, container.LivenessProbe, container.ReadinessProbe} {
		if probe != nil && probe.HTTPGet != nil && probe.HTTPGet.Port.StrVal != "" && !ports[probe.HTTPGet.Port.StrVal] {
			c.errorf(o, "container %s: a probe names port %q, which it does not declare", container.Name, probe.HTTPGet.Port.StrVal)
		}
	}
	for _, m := range container.VolumeMounts {
		if _, ok := volumes[m.Name]; !ok {
			c.errorf(o, "container %s mounts volume %s, which the pod does not have", container.Name, m.Name)
		}
	}
	for _, e := range container.Env {
		for _, word := range secretLike {
			if strings.Contains(e.Name, word) && e.Value != "" {
				c.errorf(o, "container %s: %s is given as a plain value; take it from a Secret (valueFrom.secretKeyRef)", container.Name, e.Name)
			}
		}
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil && (e.ValueFrom.SecretKeyRef.Name == "" || e.ValueFrom.SecretKeyRef.Key == "") {
			c.errorf(o, "container %s: %s names no Secret or key", container.Name, e.Name)
		}
	}
	requests, limits := container.Resources.Requests, container.Resources.Limits
	for name, request := range requests {
		limit, limited := limits[name]
		standard := name == corev1.ResourceCPU || name == corev1.ResourceMemory || name == corev1.ResourceEphemeralStorage
		switch {
		case !standard && (!limited || limit.Cmp(request) != 0):
			c.errorf(o, "container %s: the extended resource %s needs a limit equal to its request", container.Name, name)
		case limited && request.Cmp(limit) > 0:
			c.errorf(o, "container %s: %s request %s is above its limit %s", container.Name, name, request.String(), limit.String())
		}
	}
}

func (c *checker) service(o Object, s *corev1.Service) {
	matched := c.selects(o, &metav1.LabelSelector{MatchLabels: s.Spec.Selector})
	if len(matched) == 0 {
		c.errorf(o, "its selector matches no Deployment's pods")
		return
	}
	for _, port := range s.Spec.Ports {
		if name := port.TargetPort.StrVal; name != "" {
			found := false
			for _, container := range matched[0].Spec.Template.Spec.Containers {
				for _, p := range container.Ports {
					found = found || p.Name == name
				}
			}
			if !found {
				c.errorf(o, "targetPort %q is not a port of %s", name, matched[0].Name)
			}
		}
	}
}

func (c *checker) pdb(o Object, p *policyv1.PodDisruptionBudget) {
	if (p.Spec.MinAvailable == nil) == (p.Spec.MaxUnavailable == nil) {
		c.errorf(o, "exactly one of minAvailable and maxUnavailable must be set")
	}
	if len(c.selects(o, p.Spec.Selector)) == 0 {
		c.errorf(o, "its selector matches no Deployment's pods")
	}
}

func (c *checker) hpa(o Object, h *autoscalingv2.HorizontalPodAutoscaler) {
	target := c.deploymentNamed(h.Spec.ScaleTargetRef.Name)
	if h.Spec.ScaleTargetRef.Kind != "Deployment" || target == nil {
		c.errorf(o, "scaleTargetRef %s/%s is not a Deployment of the chart", h.Spec.ScaleTargetRef.Kind, h.Spec.ScaleTargetRef.Name)
	} else if target.Spec.Replicas != nil {
		c.errorf(o, "%s sets spec.replicas: every upgrade would reset what the autoscaler chose", target.Name)
	}
	if h.Spec.MinReplicas != nil && *h.Spec.MinReplicas > h.Spec.MaxReplicas {
		c.errorf(o, "minReplicas %d is above maxReplicas %d", *h.Spec.MinReplicas, h.Spec.MaxReplicas)
	}
	for _, m := range h.Spec.Metrics {
		if m.Type == autoscalingv2.ResourceMetricSourceType && m.Resource != nil && target != nil {
			if !requestsEverywhere(target, m.Resource.Name) {
				c.errorf(o, "scales on %s utilization, but a container of %s requests no %s", m.Resource.Name, target.Name, m.Resource.Name)
			}
		}
	}
}

func requestsEverywhere(d *appsv1.Deployment, name corev1.ResourceName) bool {
	for _, container := range d.Spec.Template.Spec.Containers {
		if _, ok := container.Resources.Requests[name]; !ok {
			return false
		}
	}
	return true
}

// The Kafka scaler's trigger metadata keys (KEDA v2.21.0, pkg/scalers/kafka_scaler.go, kafkaMetadata).
var kafkaKeys = []string{
	"bootstrapServers", "consumerGroup", "topic", "partitionLimitation", "lagThreshold", "activationLagThreshold",
	"offsetResetPolicy", "allowIdleConsumers", "excludePersistentLag", "scaleToZeroOnInvalidOffset",
	"limitToPartitionsWithLag", "ensureEvenDistributionOfPartitions", "fullMetadata", "version", "tls", "unsafeSsl",
	"sasl", "saslTokenProvider", "awsRegion",
}

func (c *checker) scaledObject(o Object, so *kedav1alpha1.ScaledObject) {
	// KEDA's own admission checks that need no cluster.
	if err := kedav1alpha1.CheckReplicaCountBoundsAreValid(so); err != nil {
		c.errorf(o, "%v", err)
	}
	if err := kedav1alpha1.ValidateTriggers(so.Spec.Triggers); err != nil {
		c.errorf(o, "%v", err)
	}
	if so.IsUsingModifiers() {
		if _, err := kedav1alpha1.ValidateAndCompileScalingModifiers(so.DeepCopy()); err != nil {
			c.errorf(o, "%v", err)
		}
	}
	if err := kedav1alpha1.CheckFallbackValid(so); err != nil {
		c.errorf(o, "%v", err)
	}
	ref := so.Spec.ScaleTargetRef
	var target *appsv1.Deployment
	if ref != nil && (ref.Kind == "" || ref.Kind == "Deployment") {
		target = c.deploymentNamed(ref.Name)
	}
	if target == nil {
		c.errorf(o, "scaleTargetRef is not a Deployment of the chart")
		return
	}
	if target.Spec.Replicas != nil {
		c.errorf(o, "%s sets spec.replicas: every upgrade would undo KEDA's choice (and wake a model scaled to zero)", target.Name)
	}
	for _, h := range each[autoscalingv2.HorizontalPodAutoscaler](c.objects) {
		if h.V.Spec.ScaleTargetRef.Name == target.Name {
			c.errorf(o, "%s is also the target of HPA %s: two autoscalers would fight", target.Name, h.V.Name)
		}
	}
	pod := target.Spec.Template.Spec
	brokers, prefix := envOf(pod, "KAFKA_BROKERS"), envOf(pod, "TOPIC_PREFIX")
	partitions, _ := strconv.ParseInt(envOf(pod, "TOPIC_PARTITIONS"), 10, 64)
	model := modelOf(target)
	if so.Spec.MaxReplicaCount == nil || int64(*so.Spec.MaxReplicaCount) > partitions {
		c.errorf(o, "maxReplicaCount must be set and at most TOPIC_PARTITIONS (%d): a consumer beyond the partition count gets no work", partitions)
	}
	if envOf(pod, "WORKER_GATEWAY") == "on" {
		if so.Spec.MinReplicaCount == nil || *so.Spec.MinReplicaCount < 1 {
			c.errorf(o, "minReplicaCount must be at least 1: its consumers run the worker gateway, and at zero pods remote workers have none to dial into")
		}
	} else if so.Spec.MinReplicaCount == nil || *so.Spec.MinReplicaCount != 0 {
		c.errorf(o, "minReplicaCount must be 0: a model without work scales to zero")
	}
	fact := ScaledFact{Name: so.Name, Target: target.Name, MaxReplicas: so.GetHPAMaxReplicas()}
	if so.Spec.MinReplicaCount != nil {
		fact.MinReplicas = *so.Spec.MinReplicaCount
	}
	if so.IsUsingModifiers() {
		fact.Formula = so.Spec.Advanced.ScalingModifiers.Formula
	}
	for _, trigger := range so.Spec.Triggers {
		if trigger.Type != "kafka" {
			c.errorf(o, "trigger %s: type %q, expected kafka (the consumer group's lag)", trigger.Name, trigger.Type)
			continue
		}
		md := trigger.Metadata
		for key := range md {
			if !slices.Contains(kafkaKeys, key) {
				c.errorf(o, "trigger %s: %q is not a parameter of KEDA's Kafka scaler", trigger.Name, key)
			}
		}
		lag := c.integer(o, trigger.Name, md, "lagThreshold", 1)
		activation := c.integer(o, trigger.Name, md, "activationLagThreshold", 0)
		if fact.LagThreshold != 0 && fact.LagThreshold != lag {
			c.errorf(o, "trigger %s: lagThreshold %d differs from the other triggers' %d", trigger.Name, lag, fact.LagThreshold)
		}
		fact.LagThreshold, fact.ActivationLagThreshold = lag, activation
		if md["bootstrapServers"] != brokers {
			c.errorf(o, "trigger %s: bootstrapServers %q, but the consumers use KAFKA_BROKERS %q", trigger.Name, md["bootstrapServers"], brokers)
		}
		group := prefix + "-" + model
		if md["consumerGroup"] != group {
			c.errorf(o, "trigger %s: consumerGroup %q, but the consumers of %s join %q", trigger.Name, md["consumerGroup"], model, group)
		}
		fact.ConsumerGroup = md["consumerGroup"]
		if !strings.HasPrefix(md["topic"], prefix+"."+model+".") {
			c.errorf(o, "trigger %s: topic %q is not one of %s.%s.<priority>", trigger.Name, md["topic"], prefix, model)
		}
		fact.Topics = append(fact.Topics, md["topic"])
		if policy := md["offsetResetPolicy"]; policy != "earliest" {
			c.errorf(o, "trigger %s: offsetResetPolicy %q; the consumers read a new group from the beginning (earliest)", trigger.Name, policy)
		}
		for _, key := range []string{"allowIdleConsumers", "scaleToZeroOnInvalidOffset", "excludePersistentLag"} {
			if value, ok := md[key]; ok {
				if _, err := strconv.ParseBool(value); err != nil {
					c.errorf(o, "trigger %s: %s %q is not a boolean", trigger.Name, key, value)
				}
			}
		}
	}
	c.report.ScaledObjects = append(c.report.ScaledObjects, fact)
}

func (c *checker) integer(o Object, trigger string, md map[string]string, key string, least int64) int64 {
	value, err := strconv.ParseInt(md[key], 10, 64)
	if err != nil || value < least {
		c.errorf(o, "trigger %s: %s %q must be a whole number of at least %d", trigger, key, md[key], least)
	}
	return value
}

// modelOf: the model a consumer Deployment runs (its --models argument).
func modelOf(d *appsv1.Deployment) string {
	for _, container := range d.Spec.Template.Spec.Containers {
		args := append(append([]string{}, container.Command...), container.Args...)
		for i, arg := range args {
			if arg == "--models" && i+1 < len(args) {
				return args[i+1]
			}
		}
	}
	return ""
}

// facts: what the tests assert about the consumers and the API.
func (c *checker) facts() {
	pdbs := each[policyv1.PodDisruptionBudget](c.objects)
	covered := func(d *appsv1.Deployment) bool {
		for _, p := range pdbs {
			s, err := metav1.LabelSelectorAsSelector(p.V.Spec.Selector)
			if err == nil && s.Matches(labels.Set(d.Spec.Template.Labels)) {
				return true
			}
		}
		return false
	}
	for _, d := range each[appsv1.Deployment](c.objects) {
		pod := d.V.Spec.Template.Spec
		if model := modelOf(d.V); model != "" {
			fact := ConsumerFact{Deployment: d.V.Name, Model: model, Device: envOf(pod, "RUNNER_DEVICE"), RunnerGPUs: envOf(pod, "RUNNER_GPUS"),
				NodeSelector: pod.NodeSelector, Tolerations: len(pod.Tolerations), Replicas: d.V.Spec.Replicas, HasPDB: covered(d.V)}
			fact.ShutdownGraceMs, _ = strconv.ParseInt(envOf(pod, "SHUTDOWN_GRACE_MS"), 10, 64)
			fact.Partitions, _ = strconv.ParseInt(envOf(pod, "TOPIC_PARTITIONS"), 10, 64)
			if pod.TerminationGracePeriodSeconds != nil {
				fact.TerminationGracePeriodSeconds = *pod.TerminationGracePeriodSeconds
			}
			for _, container := range pod.Containers {
				for name, q := range container.Resources.Limits {
					if strings.HasSuffix(string(name), "/gpu") {
						fact.GPUs += q.Value()
					}
				}
			}
			if fact.GPUs > 0 && fact.RunnerGPUs != gpuList(fact.GPUs) {
				c.errorf(d.Object, "RUNNER_GPUS %q, but the pod gets %d GPU(s): expected %q", fact.RunnerGPUs, fact.GPUs, gpuList(fact.GPUs))
			}
			if !fact.HasPDB {
				c.errorf(d.Object, "no PodDisruptionBudget covers its pods")
			}
			if fact.Gateway = envOf(pod, "WORKER_GATEWAY"); fact.Gateway == "on" {
				fact.GatewayService = c.gateway(d.Object, d.V)
			}
			c.report.Consumers = append(c.report.Consumers, fact)
		}
		if strings.HasSuffix(d.V.Name, "-api") {
			api := &APIFact{Deployment: d.V.Name, HasPDB: covered(d.V), ReplicasUnset: d.V.Spec.Replicas == nil}
			for _, container := range pod.Containers {
				if p := container.ReadinessProbe; p != nil && p.HTTPGet != nil {
					api.ReadinessPath = p.HTTPGet.Path
				}
				if p := container.LivenessProbe; p != nil && p.HTTPGet != nil {
					api.LivenessPath = p.HTTPGet.Path
				}
			}
			for _, h := range each[autoscalingv2.HorizontalPodAutoscaler](c.objects) {
				if h.V.Spec.ScaleTargetRef.Name == d.V.Name {
					api.HPAMax = h.V.Spec.MaxReplicas
					if h.V.Spec.MinReplicas != nil {
						api.HPAMin = *h.V.Spec.MinReplicas
					}
				}
			}
			for _, s := range each[corev1.Service](c.objects) {
				if labels.SelectorFromSet(s.V.Spec.Selector).Matches(labels.Set(d.V.Spec.Template.Labels)) && len(s.V.Spec.Ports) > 0 {
					api.ServicePort = s.V.Spec.Ports[0].Port
				}
			}
			c.report.API = api
		}
	}
}

// gateway checks that remote workers can reach a consumer's worker gateway: it listens beyond the
// pod's loopback, and a Service routes to its port. It returns that Service's name.
func (c *checker) gateway(o Object, d *appsv1.Deployment) string {
	pod := d.Spec.Template.Spec
	if host := envOf(pod, "WORKER_GATEWAY_HOST"); host == "" || host == "127.0.0.1" || host == "localhost" || host == "::1" {
		c.errorf(o, "WORKER_GATEWAY_HOST %q: the gateway would listen on the pod's loopback only, out of the workers' reach", host)
	}
	port, _ := strconv.ParseInt(envOf(pod, "WORKER_GATEWAY_PORT"), 10, 32)
	named := map[string]int32{}
	for _, container := range pod.Containers {
		for _, p := range container.Ports {
			named[p.Name] = p.ContainerPort
		}
	}
	for _, s := range each[corev1.Service](c.objects) {
		if !labels.SelectorFromSet(s.V.Spec.Selector).Matches(labels.Set(d.Spec.Template.Labels)) {
			continue
		}
		for _, p := range s.V.Spec.Ports {
			target := p.TargetPort.IntVal
			if p.TargetPort.StrVal != "" {
				target = named[p.TargetPort.StrVal]
			}
			if int64(target) == port {
				return s.V.Name
			}
		}
	}
	c.errorf(o, "WORKER_GATEWAY is on but no Service routes to its port %d", port)
	return ""
}

func gpuList(n int64) string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = strconv.Itoa(i)
	}
	return strings.Join(ids, ",")
}
