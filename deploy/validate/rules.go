package main

// A PrometheusRule: what the Prometheus Operator's CRD schema requires beyond the Go type (a
// group name, unique; each rule an alert or a recording rule, with an expression; `for` and the
// intervals as Prometheus durations), and the facts the tests compare with files/alerts.yml.

import (
	"regexp"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
)

type RuleFact struct {
	Name   string   `json:"name"`
	Groups []string `json:"groups"`
	Alerts []string `json:"alerts"`
}

// The CRD's pattern for monitoringv1.Duration.
var promDuration = regexp.MustCompile(`^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$`)

func (c *checker) prometheusRule(o Object, r *monitoringv1.PrometheusRule) {
	fact := RuleFact{Name: r.Name, Groups: []string{}, Alerts: []string{}}
	if len(r.Spec.Groups) == 0 {
		c.errorf(o, "no rule groups")
	}
	groups := map[string]bool{}
	for _, group := range r.Spec.Groups {
		if group.Name == "" || groups[group.Name] {
			c.errorf(o, "group %q: a group needs a name of its own", group.Name)
		}
		groups[group.Name] = true
		fact.Groups = append(fact.Groups, group.Name)
		if group.Interval != nil && !promDuration.MatchString(string(*group.Interval)) {
			c.errorf(o, "group %s: interval %q is not a Prometheus duration", group.Name, *group.Interval)
		}
		for i, rule := range group.Rules {
			if (rule.Alert == "") == (rule.Record == "") {
				c.errorf(o, "group %s, rule %d: names neither or both of alert and record", group.Name, i+1)
			}
			if rule.Expr.String() == "" {
				c.errorf(o, "group %s, rule %d (%s%s): no expr", group.Name, i+1, rule.Alert, rule.Record)
			}
			if rule.For != nil && !promDuration.MatchString(string(*rule.For)) {
				c.errorf(o, "group %s, alert %s: for %q is not a Prometheus duration", group.Name, rule.Alert, *rule.For)
			}
			if rule.Alert != "" {
				fact.Alerts = append(fact.Alerts, rule.Alert)
			}
		}
	}
	c.report.Rules = append(c.report.Rules, fact)
}
