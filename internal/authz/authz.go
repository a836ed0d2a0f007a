// Package authz checks that a subscription's ServiceAccount may list and watch what the
// subscription names, and get the Secrets and Services its sink uses, with
// SubjectAccessReviews. The shared informers and the Secret reads run as the operator; this
// check is what keeps a tenant from reading through it what RBAC denies them.
package authz

import (
	"context"
	"fmt"
	"sync"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// DefaultInterval is how long an answer is trusted: a grant or a revocation takes effect
// within it.
const DefaultInterval = time.Minute

// DeniedError names who may not do what, where.
type DeniedError struct {
	ServiceAccount string // namespace/name
	Verb           string
	GVR            schema.GroupVersionResource
	Namespace      string // "" for cluster-wide
	// Name is the one object asked about; "" for the whole resource.
	Name   string
	Reason string
}

func (e *DeniedError) Error() string {
	where := "cluster-wide"
	if e.Namespace != "" {
		where = "in namespace " + e.Namespace
	}
	res := e.GVR.Resource
	if e.GVR.Group != "" {
		res += "." + e.GVR.Group
	}
	if e.Name != "" {
		res += " " + e.Name
	}
	msg := fmt.Sprintf("ServiceAccount %s may not %s %s %s", e.ServiceAccount, e.Verb, res, where)
	if e.Reason != "" {
		msg += ": " + e.Reason
	}
	return msg
}

// Checker asks and caches answers for Interval. Safe for concurrent use.
type Checker struct {
	Client   client.Client
	Interval time.Duration

	mu    sync.Mutex
	cache map[key]answer
}

type key struct {
	saNamespace, saName, verb, namespace, name string
	gvr                                        schema.GroupVersionResource
}

type answer struct {
	err error // nil: allowed
	at  time.Time
	// deniedSince is when a denial of what was allowed was first seen; it is not believed
	// before it is seen again ConfirmRevocation later.
	deniedSince time.Time
}

// ConfirmRevocation is how long a denial of what was allowed waits for a second answer
// before it counts. An API server that has just started answers SubjectAccessReviews
// before its RBAC caches have synced, and denies then what it allows a moment later:
// believing the first denial would stop a running subscription and lose its queue and its
// checkpoint for nothing.
const ConfirmRevocation = 2 * time.Second

// UnconfirmedDenialError is a denial of what was allowed, not confirmed yet: no answer,
// for the caller.
type UnconfirmedDenialError struct {
	Denied *DeniedError
}

func (e *UnconfirmedDenialError) Error() string {
	return "the API server just denied what it allowed before, confirming: " + e.Denied.Error()
}

// decide turns what the API server answered (nil: allowed, a *DeniedError: denied) into
// what the caller is told and what is kept, given what was kept before (ok: there was an
// answer). Pure: the revocation rule lives here.
func decide(prev answer, ok bool, result error, now time.Time) (answer, error) {
	_, denied := result.(*DeniedError)
	switch {
	case !denied:
		return answer{err: result, at: now}, result
	case ok && prev.err == nil && prev.deniedSince.IsZero():
		// A grant seems revoked: keep the grant, ask again once ConfirmRevocation passed.
		return answer{at: prev.at, deniedSince: now}, &UnconfirmedDenialError{Denied: result.(*DeniedError)}
	case ok && prev.err == nil && now.Sub(prev.deniedSince) < ConfirmRevocation:
		return prev, &UnconfirmedDenialError{Denied: result.(*DeniedError)}
	}
	return answer{err: result, at: now}, result
}

// Check returns nil when the ServiceAccount may list and watch gvr in namespace ("" for
// all namespaces or cluster-scoped), a *DeniedError when it may not, or the API error.
func (c *Checker) Check(ctx context.Context, saNamespace, saName string, gvr schema.GroupVersionResource, namespace string) error {
	for _, verb := range []string{"list", "watch"} {
		if err := c.check(ctx, key{saNamespace: saNamespace, saName: saName, verb: verb, namespace: namespace, gvr: gvr}); err != nil {
			return err
		}
	}
	return nil
}

// CheckGet returns nil when the ServiceAccount may get the named object of gvr in namespace,
// a *DeniedError when it may not, or the API error. Cached like Check.
func (c *Checker) CheckGet(ctx context.Context, saNamespace, saName string, gvr schema.GroupVersionResource, namespace, name string) error {
	return c.check(ctx, key{saNamespace: saNamespace, saName: saName, verb: "get", namespace: namespace, name: name, gvr: gvr})
}

func (c *Checker) check(ctx context.Context, k key) error {
	interval := c.Interval
	if interval <= 0 {
		interval = DefaultInterval
	}
	c.mu.Lock()
	prev, known := c.cache[k]
	c.mu.Unlock()
	if known && prev.deniedSince.IsZero() && time.Since(prev.at) < interval {
		return prev.err
	}
	if known && !prev.deniedSince.IsZero() && time.Since(prev.deniedSince) < ConfirmRevocation {
		return &UnconfirmedDenialError{Denied: &DeniedError{ServiceAccount: k.saNamespace + "/" + k.saName,
			Verb: k.verb, GVR: k.gvr, Namespace: k.namespace, Name: k.name}}
	}

	sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User:   "system:serviceaccount:" + k.saNamespace + ":" + k.saName,
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + k.saNamespace, "system:authenticated"},
		ResourceAttributes: &authorizationv1.ResourceAttributes{
			Verb: k.verb, Group: k.gvr.Group, Version: k.gvr.Version, Resource: k.gvr.Resource, Namespace: k.namespace,
			Name: k.name,
		},
	}}
	if err := c.Client.Create(ctx, sar); err != nil {
		return fmt.Errorf("SubjectAccessReview: %w", err)
	}
	var result error
	if !sar.Status.Allowed || sar.Status.Denied {
		result = &DeniedError{ServiceAccount: k.saNamespace + "/" + k.saName, Verb: k.verb, GVR: k.gvr,
			Namespace: k.namespace, Name: k.name, Reason: sar.Status.Reason}
	}
	kept, told := decide(prev, known, result, time.Now())
	c.mu.Lock()
	if c.cache == nil {
		c.cache = map[key]answer{}
	}
	c.cache[k] = kept
	c.mu.Unlock()
	return told
}
