package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"

	notifyv1 "github.com/dynamic-notifier/dynamic-notifier/api/v1alpha1"
)

var gadgets = schema.GroupVersionResource{Group: "bench.dynamic-notifier.io", Version: "v1", Resource: "gadgets"}

// gadgetCRD is a namespaced CRD that no subscription's resource exists for until it is created.
func gadgetCRD() *apiextensionsv1.CustomResourceDefinition {
	return &apiextensionsv1.CustomResourceDefinition{
		ObjectMeta: metav1.ObjectMeta{Name: gadgets.Resource + "." + gadgets.Group},
		Spec: apiextensionsv1.CustomResourceDefinitionSpec{
			Group: gadgets.Group,
			Names: apiextensionsv1.CustomResourceDefinitionNames{Plural: "gadgets", Singular: "gadget", Kind: "Gadget",
				ListKind: "GadgetList"},
			Scope: apiextensionsv1.NamespaceScoped,
			Versions: []apiextensionsv1.CustomResourceDefinitionVersion{{
				Name: gadgets.Version, Served: true, Storage: true,
				Schema: &apiextensionsv1.CustomResourceValidation{OpenAPIV3Schema: &apiextensionsv1.JSONSchemaProps{
					Type: "object", XPreserveUnknownFields: new(true)}},
			}},
		},
	}
}

type crdRound struct {
	// From creating the CRD until it was seen Established; then from that moment until a
	// plain watch on the new resource was accepted (raw) and until the subscription was
	// Ready (ours). Negative when that came first.
	Established string  `json:"established"`
	RawMs       float64 `json:"rawMs"`
	OursMs      float64 `json:"oursMs"`
}

// runCRD: a subscription on a resource whose CRD is installed afterwards, timed from the CRD
// being Established until the subscription is Ready, against a plain watch retried until
// the API server accepts it. Each round deletes the CRD again.
func runCRD(ctx context.Context, h *harness) ([]Row, any, error) {
	var rounds []crdRound
	ns, err := h.namespace(ctx, "crd")
	if err != nil {
		return nil, nil, err
	}
	r, err := h.startOperator(ctx)
	if err != nil {
		return nil, nil, err
	}
	defer h.stopOperator(r)
	tracker, err := h.trackReady(ctx, ns)
	if err != nil {
		return nil, nil, err
	}
	defer tracker.stop()
	ws := subscription(ns, "sub-0", gadgets, h.sink.URL)
	if err := h.k8s.Create(ctx, ws); err != nil {
		return nil, nil, err
	}
	defer func() { _ = h.deleteCRD(context.WithoutCancel(ctx)) }()
	for i := range h.opts.CRDRounds {
		if err := h.waitReason(ctx, ws, notifyv1.ReasonResourceNotFound, time.Minute); err != nil {
			return nil, rounds, fmt.Errorf("round %d, before the CRD: %w", i+1, err)
		}
		round, err := h.crdRound(ctx, ns, tracker)
		if err != nil {
			return nil, rounds, fmt.Errorf("round %d: %w", i+1, err)
		}
		rounds = append(rounds, round)
		h.logf("crd round %d: Established after %s, then raw watch +%.1f ms, Ready +%.1f ms", i+1, round.Established,
			round.RawMs, round.OursMs)
		if err := h.deleteCRD(ctx); err != nil {
			return nil, rounds, err
		}
	}
	ours, raw := make([]float64, len(rounds)), make([]float64, len(rounds))
	for i, rd := range rounds {
		ours[i], raw[i] = rd.OursMs, rd.RawMs
	}
	slices.Sort(ours)
	slices.Sort(raw)
	oursMed, rawMed := ours[len(ours)/2], raw[len(raw)/2]
	row := newRow("crd/ready", "CRD installed after its subscription", "Established → Ready (median)", "ms",
		oursMed, rawMed, "raw (watch accepted)").goal("≤ 1 s", ours[len(ours)-1] <= 1000).
		note("%d rounds, worst %s ms", len(rounds), trim(ours[len(ours)-1]))
	if err := h.k8s.Delete(ctx, ws); err != nil {
		return []Row{row}, rounds, err
	}
	return []Row{row}, rounds, r.waitNoInformers(ctx, time.Minute)
}

// crdRound creates the CRD and times the three observers against one another.
func (h *harness) crdRound(ctx context.Context, ns string, tracker *readyTracker) (crdRound, error) {
	var (
		round                   crdRound
		wg                      sync.WaitGroup
		errs                    [3]error
		established, raw, ready time.Duration
	)
	rctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	start := now()
	if err := h.k8s.Create(ctx, gadgetCRD()); err != nil {
		return round, err
	}
	wg.Go(func() {
		errs[0] = poll(rctx, 2*time.Millisecond, time.Minute, "the CRD to be Established", func() (bool, error) {
			crd := &apiextensionsv1.CustomResourceDefinition{}
			if err := h.k8s.Get(rctx, client.ObjectKey{Name: gadgetCRD().Name}, crd); err != nil {
				return false, err
			}
			for _, c := range crd.Status.Conditions {
				if c.Type == apiextensionsv1.Established && c.Status == apiextensionsv1.ConditionTrue {
					established = now()
					return true, nil
				}
			}
			return false, nil
		})
	})
	wg.Go(func() {
		// Through a REST client that does not retry: client-go's clients honour the
		// Retry-After of the 429 that the API server answers while it installs the new
		// resource, which would add a second to the baseline that no watcher must wait.
		path := fmt.Sprintf("/apis/%s/%s/namespaces/%s/%s", gadgets.Group, gadgets.Version, ns, gadgets.Resource)
		errs[1] = poll(rctx, 2*time.Millisecond, time.Minute, "a watch on the new resource", func() (bool, error) {
			w, err := h.admin.CoreV1().RESTClient().Get().AbsPath(path).Param("watch", "true").MaxRetries(0).Watch(rctx)
			if err != nil {
				return false, rctx.Err()
			}
			raw = now()
			w.Stop()
			return true, nil
		})
	})
	wg.Go(func() {
		if errs[2] = tracker.waitReady(rctx, 1, time.Minute); errs[2] == nil {
			ready = now()
		}
	})
	wg.Wait()
	if err := errors.Join(errs[:]...); err != nil {
		return round, err
	}
	round.Established = (established - start).Round(time.Millisecond).String()
	round.RawMs, round.OursMs = ms(raw-established), ms(ready-established)
	return round, nil
}

// deleteCRD deletes the CRD and waits until it is gone.
func (h *harness) deleteCRD(ctx context.Context) error {
	crd := gadgetCRD()
	if err := client.IgnoreNotFound(h.k8s.Delete(ctx, crd)); err != nil {
		return err
	}
	return poll(ctx, 20*time.Millisecond, time.Minute, "the CRD to be deleted", func() (bool, error) {
		err := h.k8s.Get(ctx, client.ObjectKeyFromObject(crd), &apiextensionsv1.CustomResourceDefinition{})
		return apierrors.IsNotFound(err), client.IgnoreNotFound(err)
	})
}

// waitReason waits until the subscription's Ready condition has reason.
func (h *harness) waitReason(ctx context.Context, ws *notifyv1.WatchSubscription, reason string,
	timeout time.Duration) error {
	return poll(ctx, 20*time.Millisecond, timeout, "Ready reason "+reason, func() (bool, error) {
		got := &notifyv1.WatchSubscription{}
		if err := h.k8s.Get(ctx, client.ObjectKeyFromObject(ws), got); err != nil {
			return false, err
		}
		for _, c := range got.Status.Conditions {
			if c.Type == notifyv1.ConditionReady {
				return c.Reason == reason && got.Status.ObservedGeneration == got.Generation, nil
			}
		}
		return false, nil
	})
}
