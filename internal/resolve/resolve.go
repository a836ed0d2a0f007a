// Package resolve turns a group/version/resource into what the API server says about it
// (kind, scope, verbs) through discovery. It caches per group-version, refreshes on a miss
// at most once per interval, and can be told that a group changed (a CRD came or went).
package resolve

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
)

// Resource is a resolved, watchable resource.
type Resource struct {
	GVR        schema.GroupVersionResource
	Kind       string
	Namespaced bool
}

// NotWatchableError says the resource exists but cannot be listed and watched.
type NotWatchableError struct {
	GVR   schema.GroupVersionResource
	Verbs []string
}

func (e *NotWatchableError) Error() string {
	what := "resource"
	if strings.Contains(e.GVR.Resource, "/") {
		what = "subresource"
	}
	return fmt.Sprintf("%s %s cannot be watched: it supports only [%s], not list and watch",
		what, Describe(e.GVR), strings.Join(e.Verbs, ", "))
}

// IsNotWatchable tells whether err is a NotWatchableError.
func IsNotWatchable(err error) bool {
	var nw *NotWatchableError
	return errors.As(err, &nw)
}

// Describe writes a GVR the way users write it: group/version/resource, or version/resource
// for the core group.
func Describe(gvr schema.GroupVersionResource) string {
	if gvr.Group == "" {
		return gvr.Version + "/" + gvr.Resource
	}
	return gvr.Group + "/" + gvr.Version + "/" + gvr.Resource
}

// Resolver resolves GVRs through discovery. Safe for concurrent use.
type Resolver struct {
	discovery discovery.DiscoveryInterface
	// minRefresh bounds discovery calls for a group-version that keeps missing.
	minRefresh time.Duration

	mu      sync.Mutex
	entries map[schema.GroupVersion]*entry
}

type entry struct {
	mu        sync.Mutex // one discovery call per group-version at a time
	fetchedAt time.Time
	list      *metav1.APIResourceList // nil: the group-version does not exist
	err       error                   // transport or server error of the last fetch
}

// New returns a resolver that refreshes a missing group-version at most every minRefresh.
func New(d discovery.DiscoveryInterface, minRefresh time.Duration) *Resolver {
	return &Resolver{discovery: d, minRefresh: minRefresh, entries: map[schema.GroupVersion]*entry{}}
}

// Resolve looks gvr up. Unknown resources give an error for which meta.IsNoMatchError is
// true; resources without list and watch give a NotWatchableError.
func (r *Resolver) Resolve(gvr schema.GroupVersionResource) (Resource, error) {
	e := r.entry(gvr.GroupVersion())
	e.mu.Lock()
	defer e.mu.Unlock()
	res, found := lookup(e.list, gvr)
	stale := time.Since(e.fetchedAt) >= r.minRefresh
	// Hits are trusted until Invalidate (CRD events say when a group changes); misses and
	// failures are retried, but at most once per minRefresh.
	if e.fetchedAt.IsZero() || (!found || e.err != nil) && stale {
		e.list, e.err = r.fetch(gvr.GroupVersion())
		e.fetchedAt = time.Now()
		res, found = lookup(e.list, gvr)
	}
	if e.err != nil {
		return Resource{}, e.err
	}
	if !found {
		return Resource{}, &meta.NoResourceMatchError{PartialResource: gvr}
	}
	if !slices.Contains(res.Verbs, "list") || !slices.Contains(res.Verbs, "watch") {
		return Resource{}, &NotWatchableError{GVR: gvr, Verbs: res.Verbs}
	}
	return Resource{GVR: gvr, Kind: res.Kind, Namespaced: res.Namespaced}, nil
}

// Invalidate forgets what is known about a group, so the next Resolve asks discovery again
// at once. Called when a CRD of that group changes.
func (r *Resolver) Invalidate(group string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for gv := range r.entries {
		if gv.Group == group {
			delete(r.entries, gv)
		}
	}
}

func (r *Resolver) entry(gv schema.GroupVersion) *entry {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.entries[gv]
	if !ok {
		e = &entry{}
		r.entries[gv] = e
	}
	return e
}

func (r *Resolver) fetch(gv schema.GroupVersion) (*metav1.APIResourceList, error) {
	list, err := r.discovery.ServerResourcesForGroupVersion(gv.String())
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("discovery of %s: %w", gv, err)
	}
	return list, nil
}

func lookup(list *metav1.APIResourceList, gvr schema.GroupVersionResource) (metav1.APIResource, bool) {
	if list == nil {
		return metav1.APIResource{}, false
	}
	for _, res := range list.APIResources {
		if res.Name == gvr.Resource {
			return res, true
		}
	}
	return metav1.APIResource{}, false
}
