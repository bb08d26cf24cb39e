package main

// Decoding: each document of `helm template`'s output into the Go type Kubernetes or KEDA
// defines for its apiVersion and kind, strictly: an unknown or misspelt field, a field given
// twice, or a value of the wrong type is an error, as the API server's strict field validation
// would answer.

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"strings"

	kedav1alpha1 "github.com/kedacore/keda/v2/apis/keda/v1alpha1"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// The kinds the chart may render, each with the type it decodes into.
var kinds = map[string]func() any{
	"v1/ConfigMap":                           func() any { return &corev1.ConfigMap{} },
	"v1/Service":                             func() any { return &corev1.Service{} },
	"v1/ServiceAccount":                      func() any { return &corev1.ServiceAccount{} },
	"v1/Secret":                              func() any { return &corev1.Secret{} },
	"apps/v1/Deployment":                     func() any { return &appsv1.Deployment{} },
	"policy/v1/PodDisruptionBudget":          func() any { return &policyv1.PodDisruptionBudget{} },
	"autoscaling/v2/HorizontalPodAutoscaler": func() any { return &autoscalingv2.HorizontalPodAutoscaler{} },
	"keda.sh/v1alpha1/ScaledObject":          func() any { return &kedav1alpha1.ScaledObject{} },
	"keda.sh/v1alpha1/TriggerAuthentication": func() any {
		return &kedav1alpha1.TriggerAuthentication{}
	},
	// The Prometheus Operator's type (monitoring.prometheusRule.enabled); its rules' PromQL is checked by
	// promtool in the tests, as the operator's admission webhook parses it.
	"monitoring.coreos.com/v1/PrometheusRule": func() any { return &monitoringv1.PrometheusRule{} },
}

// Object is one decoded document.
type Object struct {
	Source string // file and document number, for messages
	Kind   string // apiVersion/kind
	Name   string
	Value  any // a pointer to the typed object
}

func (o Object) String() string { return fmt.Sprintf("%s %s (%s)", o.Kind, o.Name, o.Source) }

// decodeAll reads a stream of YAML documents; it returns what decoded and every error.
func decodeAll(source string, r io.Reader) ([]Object, []string) {
	var objects []Object
	var errs []string
	reader := utilyaml.NewYAMLReader(bufio.NewReader(r))
	for n := 1; ; n++ {
		doc, err := reader.Read()
		if err == io.EOF {
			break
		}
		where := fmt.Sprintf("%s#%d", source, n)
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", where, err))
			break
		}
		if isEmpty(doc) {
			continue
		}
		object, err := decode(where, doc)
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		objects = append(objects, object)
	}
	return objects, errs
}

// isEmpty: a document of comments and blank lines only (helm leaves them between templates).
func isEmpty(doc []byte) bool {
	for _, line := range strings.Split(string(doc), "\n") {
		line = strings.TrimSpace(line)
		if line != "" && !strings.HasPrefix(line, "#") && line != "---" {
			return false
		}
	}
	return true
}

func decode(where string, doc []byte) (Object, error) {
	// Strict YAML: a key given twice in one mapping is an error, not "the last one wins".
	data, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return Object{}, fmt.Errorf("%s: not valid YAML: %v", where, err)
	}
	var meta metav1.TypeMeta
	if err := kjson.UnmarshalCaseSensitivePreserveInts(data, &meta); err != nil {
		return Object{}, fmt.Errorf("%s: no apiVersion/kind: %v", where, err)
	}
	kind := meta.APIVersion + "/" + meta.Kind
	make, known := kinds[kind]
	if !known {
		return Object{}, fmt.Errorf("%s: %s is not a kind this chart may render", where, kind)
	}
	value := make()
	strict, err := kjson.UnmarshalStrict(data, value)
	if err != nil {
		return Object{}, fmt.Errorf("%s: %s does not decode: %v", where, kind, err)
	}
	if len(strict) > 0 {
		var lines []string
		for _, e := range strict {
			lines = append(lines, e.Error())
		}
		return Object{}, fmt.Errorf("%s: %s: %s", where, kind, strings.Join(lines, "; "))
	}
	name := ""
	if accessor, ok := value.(metav1.Object); ok {
		name = accessor.GetName()
	}
	return Object{Source: where, Kind: kind, Name: name, Value: value}, nil
}

// read concatenates the inputs; "-" is standard input.
func read(path string, stdin io.Reader, open func(string) ([]byte, error)) ([]byte, error) {
	if path == "-" {
		var buf bytes.Buffer
		_, err := io.Copy(&buf, stdin)
		return buf.Bytes(), err
	}
	return open(path)
}
