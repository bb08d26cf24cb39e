// Command validate decodes every object of a rendered Helm chart strictly into the Kubernetes
// API types (k8s.io/api), KEDA's (github.com/kedacore/keda/v2/apis/keda/v1alpha1) and the
// Prometheus Operator's (PrometheusRule), runs
// the checks of checks.go, and prints a JSON report; it exits 1 when anything is wrong.
//
//	helm template img2img deploy/helm/img2img | go run ./deploy/validate -
//	go run ./deploy/validate rendered.yaml [more.yaml...]
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
)

func main() {
	paths := os.Args[1:]
	if len(paths) == 0 || paths[0] == "-h" || paths[0] == "--help" {
		fmt.Fprintln(os.Stderr, "usage: validate FILE|- [FILE...]   (rendered manifests, - for standard input)")
		os.Exit(2)
	}
	report := &Report{Objects: []string{}, Consumers: []ConsumerFact{}, ScaledObjects: []ScaledFact{}, Rules: []RuleFact{}, Errors: []string{}}
	var objects []Object
	for _, path := range paths {
		data, err := read(path, os.Stdin, os.ReadFile)
		if err != nil {
			fmt.Fprintf(os.Stderr, "validate: %v\n", err)
			os.Exit(2)
		}
		decoded, errs := decodeAll(path, strings.NewReader(string(data)))
		objects = append(objects, decoded...)
		report.Errors = append(report.Errors, errs...)
	}
	if len(objects) == 0 {
		report.Errors = append(report.Errors, "no objects in the input")
	}
	check(objects, report)
	out := json.NewEncoder(os.Stdout)
	out.SetIndent("", "  ")
	if err := out.Encode(report); err != nil {
		fmt.Fprintf(os.Stderr, "validate: %v\n", err)
		os.Exit(2)
	}
	for _, e := range report.Errors {
		fmt.Fprintln(os.Stderr, "error:", e)
	}
	fmt.Fprintf(os.Stderr, "validate: %d objects, %d errors\n", len(objects), len(report.Errors))
	if len(report.Errors) > 0 {
		os.Exit(1)
	}
}
