package main

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/go-logr/logr/funcr"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/yaml"

	notifyv1 "github.com/dynamic-notifier/dynamic-notifier/api/v1alpha1"
	"github.com/dynamic-notifier/dynamic-notifier/internal/sink"
	"github.com/dynamic-notifier/dynamic-notifier/internal/subscription"
)

// sinkReport describes a sink without reading its Secrets.
type sinkReport struct {
	// Described is what status.sink shows: webhook, service, log, or Kind/name of the sink
	// object.
	Described string `json:"described"`
	Kind      string `json:"kind,omitempty"`
	// URL is where requests go; a URL from a Secret is named, not read.
	URL string `json:"url,omitempty"`
	// Mode is binary, structured or batched for HTTP sinks.
	Mode  sink.Mode `json:"mode,omitempty"`
	Notes []string  `json:"notes,omitempty"`
}

// describeSink sums up the sink a subscription delivers to.
func describeSink(target subscription.Target) sinkReport {
	s := target.Sink
	r := sinkReport{Described: target.Described, Kind: subscription.SinkKind(s), URL: sinkURL(target.Source, s),
		Mode: subscription.WireMode(s)}
	secret := func(name string) string { return target.Source.Namespace + "/" + name }
	var opts notifyv1.HTTPOptions
	switch r.Kind {
	case subscription.KindWebhook:
		opts = s.Webhook.HTTPOptions
	case subscription.KindService:
		opts = s.Service.HTTPOptions
	case subscription.KindKafka, subscription.KindNATS:
		r.Mode = sink.ModeBinary
		if s.Kafka.ContentMode == notifyv1.ContentModeStructured || s.NATS.ContentMode == notifyv1.ContentModeStructured {
			r.Mode = sink.ModeStructured
		}
		for _, ref := range subscription.References(s, target.Source, target.Field) {
			r.Notes = append(r.Notes, "reads Secret "+secret(ref.Name)+" ("+ref.Field+", not read here)")
		}
		return r
	default:
		return r
	}
	if opts.HeadersFrom != nil {
		r.Notes = append(r.Notes, "headers from Secret "+secret(opts.HeadersFrom.SecretRef.Name)+" (not read here)")
	}
	if ref := opts.SigningSecretRef; ref != nil {
		r.Notes = append(r.Notes, "signed (Standard Webhooks) with the key in Secret "+secret(ref.Name)+
			": webhook-id, webhook-timestamp and webhook-signature headers are added when sending, and the "+
			"request is never binary")
	}
	if r.Mode == sink.ModeBatched {
		size := notifyv1.DefaultMaxBatchSize
		if opts.MaxBatchSize != nil {
			size = int(*opts.MaxBatchSize)
		}
		r.Notes = append(r.Notes, fmt.Sprintf("batched: the events waiting for delivery go together, up to %d "+
			"per request; a lone event goes as a batch of one, as shown", size))
	}
	if t := opts.TLS; t != nil {
		if t.CASecretRef != nil {
			r.Notes = append(r.Notes, "TLS: trusts the CA in Secret "+secret(t.CASecretRef.Name))
		}
		if t.CertSecretRef != nil {
			r.Notes = append(r.Notes, "TLS: presents the client certificate in Secret "+secret(t.CertSecretRef.Name))
		}
		if t.InsecureSkipVerify {
			r.Notes = append(r.Notes, "TLS: the server's certificate is not verified (insecureSkipVerify)")
		}
	}
	if target.Source.Account == nil {
		r.Notes = append(r.Notes, "a ClusterWatchSink: its Secrets are in namespace "+target.Source.Namespace+
			" and the operator reads them with its own rights")
	}
	return r
}

// sinkURL is where an HTTP sink posts, as its errors name it: a URL from a Secret is named,
// not read; credentials in a URL are masked.
func sinkURL(src subscription.SecretSource, s notifyv1.Sink) string {
	switch {
	case s.Webhook != nil && s.Webhook.URLFrom != nil:
		ref := s.Webhook.URLFrom.SecretKeyRef
		return fmt.Sprintf("the URL in Secret %s/%s, key %s", src.Namespace, ref.Name, ref.Key)
	case s.Webhook != nil:
		return sink.MaskURL(s.Webhook.URL)
	case s.Service != nil:
		return subscription.ServiceURL(src.Namespace, s.Service)
	case s.Kafka.Topic != "" || len(s.Kafka.Brokers) > 0:
		cfg := subscription.KafkaConfig(s.Kafka)
		return "topic " + cfg.Topic + " on " + strings.Join(cfg.Brokers, ",")
	case len(s.NATS.Servers) > 0:
		return strings.Join(subscription.NATSConfig(s.NATS).Servers, ",")
	}
	return ""
}

// cloudEvent is what the operator would send for one change.
type cloudEvent struct {
	// Mode is binary, structured or batched for an HTTP sink, log for the log sink.
	Mode   string `json:"mode"`
	Method string `json:"method,omitempty"`
	URL    string `json:"url,omitempty"`
	// Topic and Key are a Kafka record's; Subject a NATS message's.
	Topic   string `json:"topic,omitempty"`
	Key     string `json:"key,omitempty"`
	Subject string `json:"subject,omitempty"`
	// Headers are the request's headers the event makes; Notes name those the sink adds
	// from its Secrets.
	Headers map[string]string `json:"headers,omitempty"`
	// Body is the request's body, exactly.
	Body string `json:"body,omitempty"`
	// Log is the log sink's line (the operator's logger writes the same keys and values).
	Log   string   `json:"log,omitempty"`
	Notes []string `json:"notes,omitempty"`
}

// renderCloudEvent encodes msg as the sink would send it: through the sink package's
// encodings for HTTP, Kafka and NATS sinks, through the log sink itself for the log.
func renderCloudEvent(ctx context.Context, target subscription.Target, msg sink.Message) (*cloudEvent, error) {
	switch subscription.SinkKind(target.Sink) {
	case subscription.KindLog:
		var line string
		logger := funcr.NewJSON(func(obj string) { line = obj }, funcr.Options{})
		built, err := (&subscription.Sinks{Log: logger}).Build(ctx, target.Sink, target.Source, target.Field, io.Discard)
		if err != nil {
			return nil, err
		}
		logSink, err := built.Open()
		if err != nil {
			return nil, err
		}
		if err := logSink.Send(ctx, msg); err != nil {
			return nil, err
		}
		return &cloudEvent{Mode: subscription.KindLog, Log: line}, nil
	case subscription.KindKafka:
		cfg := subscription.KafkaConfig(target.Sink.Kafka)
		rec, err := sink.KafkaRecord(cfg.Topic, cfg.Structured, msg)
		if err != nil {
			return nil, fmt.Errorf("the event could not be encoded: %w", err)
		}
		ce := &cloudEvent{Mode: string(describeSink(target).Mode), Topic: rec.Topic, Key: string(rec.Key),
			Headers: map[string]string{}, Body: string(rec.Value), Notes: describeSink(target).Notes}
		for _, h := range rec.Headers {
			ce.Headers[h.Key] = string(h.Value)
		}
		return ce, nil
	case subscription.KindNATS:
		cfg := subscription.NATSConfig(target.Sink.NATS)
		subject, err := sink.ParseSubject(cmp.Or(cfg.Subject, sink.DefaultNATSSubject))
		if err != nil {
			return nil, err
		}
		m, err := sink.NATSMessage(subject.Render(msg), cfg.Structured, msg)
		if err != nil {
			return nil, fmt.Errorf("the event could not be encoded: %w", err)
		}
		ce := &cloudEvent{Mode: string(describeSink(target).Mode), Subject: m.Subject, Headers: map[string]string{},
			Body: string(m.Data), Notes: describeSink(target).Notes}
		for k, v := range m.Header {
			ce.Headers[k] = strings.Join(v, ", ")
		}
		return ce, nil
	}
	mode := subscription.WireMode(target.Sink)
	header, body, err := sink.Encode(mode, msg)
	if err != nil {
		return nil, fmt.Errorf("the event could not be encoded: %w", err)
	}
	header.Set("User-Agent", sink.UserAgent)
	ce := &cloudEvent{Mode: string(mode), Method: http.MethodPost, URL: sinkURL(target.Source, target.Sink),
		Headers: map[string]string{}, Body: string(body)}
	for k, v := range header {
		ce.Headers[k] = strings.Join(v, ", ")
	}
	ce.Notes = describeSink(target).Notes
	return ce, nil
}

// readObject reads one object from a YAML or JSON file.
func readObject(path string) (*unstructured.Unstructured, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	obj := map[string]any{}
	if err := yaml.Unmarshal(data, &obj); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &unstructured.Unstructured{Object: obj}, nil
}

// printStructured writes v as JSON or YAML.
func printStructured(out io.Writer, format string, v any) error {
	var data []byte
	var err error
	if format == formatYAML {
		data, err = yaml.Marshal(v)
	} else {
		data, err = json.MarshalIndent(v, "", "  ")
		data = append(data, '\n')
	}
	if err != nil {
		return err
	}
	_, err = out.Write(data)
	return err
}

// printStructuredLine writes v as one line of JSON.
func printStructuredLine(out io.Writer, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = out.Write(append(data, '\n'))
	return err
}

// printTestReport writes a report for people.
func printTestReport(w io.Writer, r *testReport) {
	p := func(format string, args ...any) { _, _ = fmt.Fprintf(w, format, args...) }
	p("WatchSubscription %s", r.Subscription)
	if r.From != "" {
		p(" (%s)", r.From)
	}
	p("\n")
	field := func(name, value string) {
		if value != "" {
			p("  %-10s %s\n", name, value)
		}
	}
	resource := r.Resource
	if r.Kind != "" {
		resource += " (" + r.Kind + ")"
	}
	field("resource", resource)
	field("watches", strings.Join(r.Streams, ", "))
	field("selects", r.Selects)
	if r.Sink.Described != "" {
		s := r.Sink.Described
		if r.Sink.Kind != "" && r.Sink.Kind != r.Sink.Described {
			s += ", " + r.Sink.Kind
		}
		if r.Sink.URL != "" {
			s += " " + r.Sink.URL
		}
		if r.Sink.Mode != "" {
			s += ", " + string(r.Sink.Mode) + " mode"
		}
		field("sink", s)
		for _, n := range r.Sink.Notes {
			field("", n)
		}
	}
	field("payload", r.Payload)
	for _, c := range r.Checks {
		line := c.What + ": " + c.Result
		if c.Detail != "" && c.Result != checkDenied {
			line += " (" + c.Detail + ")"
		}
		field("check", line)
	}
	for _, problem := range r.Problems {
		field("PROBLEM", problem)
	}
	if r.Resource != "" && len(r.Streams) > 0 {
		printObjects(w, r)
	}
	p("\n")
}

func printObjects(w io.Writer, r *testReport) {
	p := func(format string, args ...any) { _, _ = fmt.Fprintf(w, format, args...) }
	if r.EventType == "Added" {
		p("\n  %d objects exist, %d match. They are shown as the Added event each would be (as sendInitialEvents "+
			"sends existing objects, or as their creation). Nothing was sent.\n", r.Listed, r.Matched)
	} else {
		p("\n  The %s event from --old-object to the live object. Nothing was sent.\n", r.EventType)
	}
	for _, o := range r.Objects {
		switch {
		case o.Error != "":
			p("\n  %s: matches, but %s\n", o.Object, o.Error)
		case !o.Matched:
			p("\n  %s: does not match: %s\n", o.Object, o.Reason)
		default:
			p("\n  %s: matches, %s\n", o.Object, describeEvent(o))
			printCloudEvent(w, o.CloudEvent, "    ")
		}
	}
	if shown := len(r.Objects); shown < r.Listed {
		p("\n  ... %d more objects not shown (--limit)\n", r.Listed-shown)
	}
}

func describeEvent(o objectReport) string {
	if o.CloudEvent == nil {
		return o.EventType
	}
	if o.CloudEvent.Mode == subscription.KindLog {
		return "the operator would log:"
	}
	return "the operator would send:"
}

// printCloudEvent writes a request as it goes on the wire: the request line, the headers
// sorted, a blank line and the body.
func printCloudEvent(w io.Writer, ce *cloudEvent, indent string) {
	p := func(format string, args ...any) { _, _ = fmt.Fprintf(w, format, args...) }
	if ce.Mode == subscription.KindLog {
		p("%s%s\n", indent, ce.Log)
		return
	}
	switch {
	case ce.Topic != "":
		p("%sKafka record to topic %s, key %s\n", indent, ce.Topic, ce.Key)
	case ce.Subject != "":
		p("%sNATS JetStream message on subject %s\n", indent, ce.Subject)
	default:
		p("%s%s %s\n", indent, ce.Method, ce.URL)
	}
	for _, k := range slices.Sorted(maps.Keys(ce.Headers)) {
		p("%s%s: %s\n", indent, k, ce.Headers[k])
	}
	for _, n := range ce.Notes {
		p("%s# %s\n", indent, n)
	}
	p("%s\n%s%s\n", indent, indent, ce.Body)
	p("%s(%s bytes)\n", indent, strconv.Itoa(len(ce.Body)))
}

// printSinkObjects describes the sink objects of files that hold no subscription: a sink
// object sends nothing by itself.
func printSinkObjects(w io.Writer, in *files, operatorNamespace string) {
	p := func(format string, args ...any) { _, _ = fmt.Fprintf(w, format, args...) }
	for i, obj := range in.sinks {
		var spec notifyv1.WatchSinkSpec
		src := subscription.SecretSource{Namespace: obj.GetNamespace(),
			// Read as each subscription's ServiceAccount; any account says "not the operator's".
			Account: &types.NamespacedName{Namespace: obj.GetNamespace()}}
		switch s := obj.(type) {
		case *notifyv1.WatchSink:
			spec = s.Spec
		case *notifyv1.ClusterWatchSink:
			spec = s.Spec.WatchSinkSpec
			src = subscription.SecretSource{Namespace: operatorNamespace}
		}
		r := describeSink(subscription.Target{Sink: spec.Sink, Source: src, Described: in.sinkNames()[i]})
		p("%s: a sink object; it sends nothing by itself\n", r.Described)
		line := r.Kind
		if r.URL != "" {
			line += " " + r.URL
		}
		if r.Mode != "" {
			line += ", " + string(r.Mode) + " mode"
		}
		p("  %-10s %s\n", "sink", line)
		for _, n := range r.Notes {
			p("  %-10s %s\n", "", n)
		}
		if spec.Payload != nil {
			p("  %-10s its subscriptions that set no spec.payload use its own\n", "payload")
		}
	}
	p("\nTest a subscription that names it: kubectl notifier test -f SINK.yaml -f SUBSCRIPTION.yaml\n")
}
