/*
Copyright 2026.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
You may obtain a copy of the License at

    http://www.apache.org/licenses/LICENSE-2.0

Unless required by applicable law or agreed to in writing, software
distributed under the License is distributed on an "AS IS" BASIS,
WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
See the License for the specific language governing permissions and
limitations under the License.
*/

package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// WatchSubscriptionSpec says which objects to watch, which of their changes matter and where
// to send them.
// +kubebuilder:validation:XValidation:rule="!has(self.namespaces) || !('*' in self.namespaces) || size(self.namespaces) == 1",message="namespaces: \"*\" cannot be combined with other namespaces",fieldPath=".namespaces"
// +kubebuilder:validation:XValidation:rule="has(self.sink) != has(self.sinkRef)",message="exactly one of sink and sinkRef must be set",fieldPath=".sink"
type WatchSubscriptionSpec struct {
	// resource names the objects to watch by group, version and resource, as in a GVR.
	// Any built-in type or custom resource works, including a CRD installed later.
	// +required
	Resource ResourceRef `json:"resource,omitzero"`

	// namespaces to watch. Empty means the subscription's own namespace; ["*"] means all
	// namespaces. Ignored for cluster-scoped resources.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MinItems=0
	// +kubebuilder:validation:MaxItems=64
	Namespaces []NamespaceName `json:"namespaces,omitempty"`

	// selector filters objects by label, with the usual matchLabels / matchExpressions.
	// Empty or absent matches every object.
	// +optional
	// +kubebuilder:validation:XValidation:rule="!has(self.matchExpressions) || self.matchExpressions.all(e, e.operator in ['In', 'NotIn', 'Exists', 'DoesNotExist'])",message="selector.matchExpressions: operator must be one of In, NotIn, Exists, DoesNotExist"
	// +kubebuilder:validation:XValidation:rule="!has(self.matchExpressions) || self.matchExpressions.all(e, e.operator in ['In', 'NotIn'] ? (has(e.values) && size(e.values) > 0) : (!has(e.values) || size(e.values) == 0))",message="selector.matchExpressions: In and NotIn need values, Exists and DoesNotExist take none"
	Selector *metav1.LabelSelector `json:"selector,omitempty"`

	// fieldSelector filters objects by field, as in `kubectl get --field-selector`, for
	// example "metadata.name=settings" or "status.phase!=Running". Any dotted path of the
	// object may be used; = , == and != are supported.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	FieldSelector string `json:"fieldSelector,omitempty"`

	// filter is a CEL expression returning bool, evaluated for every change that passed
	// the selectors and event types. Variables: object (the object after the change, the
	// last state for Deleted), oldObject (the object before an Updated change, null
	// otherwise) and eventType ("Added", "Updated" or "Deleted"). The Kubernetes CEL
	// libraries are available. Example, replicas changed:
	// eventType == "Updated" && object.spec.replicas != oldObject.spec.replicas
	// +optional
	// +kubebuilder:validation:MaxLength=4096
	Filter string `json:"filter,omitempty"`

	// ignore drops common noise without CEL.
	// +optional
	Ignore *IgnoreSpec `json:"ignore,omitempty"`

	// payload shapes the data of each event.
	// +optional
	Payload *PayloadSpec `json:"payload,omitempty"`

	// eventTypes to deliver. Empty means all of Added, Updated and Deleted.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MinItems=0
	// +kubebuilder:validation:MaxItems=3
	EventTypes []EventType `json:"eventTypes,omitempty"`

	// sendInitialEvents delivers, when true, every object that already exists when the
	// subscription starts watching as Added. When false (the default) only later changes
	// are delivered.
	// +optional
	SendInitialEvents bool `json:"sendInitialEvents,omitempty"`

	// suspend stops delivery without deleting the subscription. Changes made while
	// suspended are not delivered later.
	// +optional
	Suspend bool `json:"suspend,omitempty"`

	// serviceAccountName is the ServiceAccount of the subscription's namespace it acts as
	// (default "default"): unless the operator runs with --subscription-authorization=None,
	// it must be allowed to list and watch the resource in every namespace the subscription
	// covers, or the subscription reports Forbidden and delivers nothing.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	ServiceAccountName string `json:"serviceAccountName,omitempty"`

	// sink is where events go, written out here. Exactly one of sink and sinkRef.
	// +optional
	Sink *Sink `json:"sink,omitempty"`

	// sinkRef names a WatchSink of the subscription's namespace, or a ClusterWatchSink the
	// platform team offers to it, to send events to. Exactly one of sink and sinkRef.
	// +optional
	SinkRef *SinkReference `json:"sinkRef,omitempty"`

	// delivery tunes timeouts, retries, queueing and the dead-letter sink.
	// +optional
	Delivery *DeliverySpec `json:"delivery,omitempty"`
}

// IgnoreSpec drops updates that only touch parts of an object nobody asked about.
// +kubebuilder:validation:MinProperties=0
type IgnoreSpec struct {
	// statusOnly drops updates where only status changed (besides resourceVersion and
	// managedFields).
	// +optional
	StatusOnly bool `json:"statusOnly,omitempty"`

	// metadataOnly drops updates where only metadata changed (labels, annotations,
	// resourceVersion, managedFields, ...): spec, data and status are the same.
	// +optional
	MetadataOnly bool `json:"metadataOnly,omitempty"`
}

// PayloadMode says how much of the object an event carries.
// +kubebuilder:validation:Enum=Full;Metadata;Reference
type PayloadMode string

const (
	// PayloadFull sends the whole object (without managedFields).
	PayloadFull PayloadMode = "Full"
	// PayloadMetadata sends apiVersion, kind and metadata.
	PayloadMetadata PayloadMode = "Metadata"
	// PayloadReference sends apiVersion, kind, namespace, name, uid and resourceVersion.
	PayloadReference PayloadMode = "Reference"
)

// PayloadSpec shapes the data of each event.
// +kubebuilder:validation:XValidation:rule="!has(self.template) || (!has(self.mode) && !(has(self.includeOldObject) && self.includeOldObject) && !(has(self.includeChangedPaths) && self.includeChangedPaths))",message="payload.template makes the whole body: mode, includeOldObject and includeChangedPaths do not apply"
// +kubebuilder:validation:XValidation:rule="!has(self.contentType) || has(self.template)",message="payload.contentType needs payload.template",fieldPath=".contentType"
// +kubebuilder:validation:MinProperties=0
type PayloadSpec struct {
	// mode is Full (the default), Metadata or Reference.
	// +optional
	Mode PayloadMode `json:"mode,omitempty"`

	// includeOldObject makes the data of Updated events {"object": ..., "oldObject": ...}
	// (both shaped by mode); other events carry {"object": ...}.
	// +optional
	IncludeOldObject bool `json:"includeOldObject,omitempty"`

	// includeSecretData sends the values of a Secret's data and stringData. By default
	// they are replaced by "<redacted>" (keys kept), as is the last-applied-configuration
	// annotation of Secrets.
	// +optional
	IncludeSecretData bool `json:"includeSecretData,omitempty"`

	// includeChangedPaths adds "changedPaths" to the data of Updated events: the dotted
	// paths whose values differ between the old and the new object (lists compared whole).
	// The data is then an envelope {"object": ..., "changedPaths": [...]}.
	// +optional
	IncludeChangedPaths bool `json:"includeChangedPaths,omitempty"`

	// template is a CEL expression whose value is the body of each request, so the sink
	// gets the shape its service documents (a Slack message, a Teams card): a string is
	// sent as it is, a map or a list as JSON. It sees object, oldObject and eventType as a
	// filter does, and event: the CloudEvent attributes id, type, source, subject and time.
	// Example, for a Slack incoming webhook:
	// {"text": eventType + ": " + object.metadata.namespace + "/" + object.metadata.name}
	// Secret values are redacted in what it sees unless includeSecretData. A template that
	// fails for a change (a missing field, its cost budget) fails that change's delivery.
	// In binary mode the CloudEvent attributes still go in ce- headers.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=8192
	Template string `json:"template,omitempty"`

	// contentType of the template's body; by default application/json for a map or a
	// list and text/plain for a string.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=127
	// +kubebuilder:validation:Pattern=`^[a-zA-Z0-9][-a-zA-Z0-9!#$&^_.+]*/[a-zA-Z0-9][-a-zA-Z0-9!#$&^_.+]*( *; *[-a-zA-Z0-9!#$&^_.+]+=[-a-zA-Z0-9!#$&^_.+"]+)*$`
	ContentType string `json:"contentType,omitempty"`
}

// SinkKind is the kind of a sink object a subscription names.
// +kubebuilder:validation:Enum=WatchSink;ClusterWatchSink
type SinkKind string

const (
	// SinkKindWatchSink is a WatchSink of the subscription's namespace.
	SinkKindWatchSink SinkKind = "WatchSink"
	// SinkKindClusterWatchSink is a ClusterWatchSink whose namespaceSelector admits the
	// subscription's namespace.
	SinkKindClusterWatchSink SinkKind = "ClusterWatchSink"
)

// SinkReference names a sink object.
type SinkReference struct {
	// kind is WatchSink (the default) or ClusterWatchSink.
	// +optional
	Kind SinkKind `json:"kind,omitempty"`

	// name of the sink object.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Name string `json:"name,omitempty"`
}

// KindOrDefault is the kind the reference names, WatchSink when it names none.
func (r *SinkReference) KindOrDefault() SinkKind {
	if r.Kind == "" {
		return SinkKindWatchSink
	}
	return r.Kind
}

// ResourceRef identifies a resource by group, version and resource.
type ResourceRef struct {
	// group of the resource, empty for the core group (ConfigMaps, Pods, ...).
	// +optional
	// +kubebuilder:validation:MinLength=0
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Group string `json:"group,omitempty"`

	// version of the resource, such as "v1" or "v1beta1".
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Version string `json:"version,omitempty"`

	// resource is the lower-case plural name, such as "configmaps" or "deployments".
	// A subresource ("pods/log") is accepted here but cannot be watched.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=127
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(/[a-z0-9]([-a-z0-9]*[a-z0-9])?)?$`
	Resource string `json:"resource,omitempty"`
}

// NamespaceName is a namespace name (a DNS-1123 label) or "*" for all namespaces.
// +kubebuilder:validation:MinLength=1
// +kubebuilder:validation:MaxLength=63
// +kubebuilder:validation:Pattern=`^(\*|[a-z0-9]([-a-z0-9]*[a-z0-9])?)$`
type NamespaceName string

// AllNamespaces is the namespaces entry that selects every namespace.
const AllNamespaces NamespaceName = "*"

// EventType is a kind of change to an object.
// +kubebuilder:validation:Enum=Added;Updated;Deleted
type EventType string

const (
	EventAdded   EventType = "Added"
	EventUpdated EventType = "Updated"
	EventDeleted EventType = "Deleted"
)

// Sink is where events are delivered. Exactly one member is set. The Secrets it names are
// read from the sink's namespace: the subscription's for a sink written in it or a
// WatchSink, the operator's for a ClusterWatchSink.
// +kubebuilder:validation:MinProperties=1
// +kubebuilder:validation:XValidation:rule="[has(self.webhook), has(self.service), has(self.log), has(self.kafka), has(self.nats)].filter(x, x).size() == 1",message="sink: exactly one of webhook, service, log, kafka or nats must be set"
type Sink struct {
	// webhook delivers each event as a CloudEvent over HTTP to a URL.
	// +optional
	Webhook *WebhookSink `json:"webhook,omitempty"`

	// service delivers each event as a CloudEvent over HTTP to a Service in the cluster.
	// +optional
	Service *ServiceSink `json:"service,omitempty"`

	// log writes each event as one structured line to the operator's log, for debugging.
	// +optional
	Log *LogSink `json:"log,omitempty"`

	// kafka publishes each event as a CloudEvent record to a Kafka topic.
	// +optional
	Kafka KafkaSink `json:"kafka,omitzero"`

	// nats publishes each event as a CloudEvent message to NATS JetStream.
	// +optional
	NATS NATSSink `json:"nats,omitzero"`
}

// WebhookSink posts CloudEvents to a URL.
// +kubebuilder:validation:XValidation:rule="!has(self.maxBatchSize) || (has(self.contentMode) && self.contentMode == 'batched')",message="maxBatchSize requires contentMode batched",fieldPath=".maxBatchSize"
// +kubebuilder:validation:XValidation:rule="has(self.url) != has(self.urlFrom)",message="exactly one of url and urlFrom must be set"
// +kubebuilder:validation:MinProperties=1
type WebhookSink struct {
	// url is the absolute http or https URL events are posted to. Exactly one of url and
	// urlFrom.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="isURL(self) && url(self).getScheme() in ['http', 'https'] && url(self).getHostname() != ''",message="sink.webhook.url must be an absolute http or https URL with a host"
	URL string `json:"url,omitempty"`

	// urlFrom reads the URL from a Secret, for URLs that are credentials (Slack, Teams and
	// Discord webhooks). The URL is never shown in status, Events or logs.
	// +optional
	URLFrom *URLSource `json:"urlFrom,omitempty"`

	HTTPOptions `json:",inline"`
}

// ServiceSink posts CloudEvents to a Service: http://<name>.<namespace>.svc:<port><path>,
// or https when tls is set.
// +kubebuilder:validation:XValidation:rule="!has(self.maxBatchSize) || (has(self.contentMode) && self.contentMode == 'batched')",message="maxBatchSize requires contentMode batched",fieldPath=".maxBatchSize"
type ServiceSink struct {
	// name of the Service.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z]([-a-z0-9]*[a-z0-9])?$`
	Name string `json:"name,omitempty"`

	// namespace of the Service; defaults to the subscription's namespace.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Namespace string `json:"namespace,omitempty"`

	// port of the Service; defaults to 80, or 443 with tls.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	Port int32 `json:"port,omitempty"`

	// path of the request, starting with "/"; defaults to "/".
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=1024
	// +kubebuilder:validation:Pattern=`^/[^\s?#]*$`
	Path string `json:"path,omitempty"`

	HTTPOptions `json:",inline"`
}

// ContentMode is how a CloudEvent is carried in an HTTP request or a broker's message.
// +kubebuilder:validation:Enum=binary;structured;batched
type ContentMode string

const (
	// ContentModeBinary puts attributes in ce-* headers and the object in the body.
	ContentModeBinary ContentMode = "binary"
	// ContentModeStructured sends the whole event as application/cloudevents+json.
	ContentModeStructured ContentMode = "structured"
	// ContentModeBatched sends application/cloudevents-batch+json: a JSON array of
	// structured events, as many as are queued (up to maxBatchSize) in one request.
	ContentModeBatched ContentMode = "batched"
)

// HTTPOptions are the settings shared by HTTP sinks.
type HTTPOptions struct {
	// contentMode is binary (the default), structured, or batched. Batched sends, in one
	// request, the events that are waiting for delivery, so a busy subscription needs far
	// fewer requests; a lone event still goes at once, in a batch of one. The receiver
	// must accept application/cloudevents-batch+json.
	// +optional
	ContentMode ContentMode `json:"contentMode,omitempty"`

	// maxBatchSize caps the events of one batched request (default 100); a request also
	// stays under about 1 MiB, and one the receiver refuses as too large (413) is split.
	// Only with contentMode batched. Dead letters always go one at a time.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000
	MaxBatchSize *int32 `json:"maxBatchSize,omitempty"`

	// headersFrom adds HTTP headers to every request: each key of the Secret is a header
	// name, its value the header value. The Secret must be in the sink's namespace.
	// +optional
	HeadersFrom *HeadersFrom `json:"headersFrom,omitempty"`

	// tls configures how the sink's certificate is verified.
	// +optional
	TLS *TLSConfig `json:"tls,omitempty"`

	// signingSecretRef signs every request by the Standard Webhooks scheme
	// (www.standardwebhooks.com), which its libraries verify: headers webhook-id (the event
	// id; for a batch, "batch:" and the hex SHA-256 of its event ids joined by newlines),
	// webhook-timestamp (Unix seconds) and webhook-signature ("v1," and the base64
	// HMAC-SHA256 of "<id>.<timestamp>.<body>"). The key is the Secret's key (default
	// "key"): a "whsec_<base64>" value is decoded, any other value is the key itself.
	// Signed requests go in structured mode even when contentMode is binary: the scheme
	// signs only id, timestamp and body, so type, subject and the other attributes must be
	// in the body, not in ce-* headers.
	// +optional
	SigningSecretRef *SigningKeyReference `json:"signingSecretRef,omitempty"`
}

// SigningKeyReference names the key of a Secret in the sink's namespace holding
// an HMAC key.
type SigningKeyReference struct {
	// name of the Secret.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Name string `json:"name,omitempty"`

	// key in the Secret; defaults to "key".
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[-._a-zA-Z0-9]+$`
	Key string `json:"key,omitempty"`
}

// HeadersFrom names a Secret holding HTTP headers.
type HeadersFrom struct {
	// secretRef names a Secret in the sink's namespace.
	// +required
	SecretRef LocalSecretReference `json:"secretRef,omitzero"`
}

// URLSource is where a sink's URL is kept.
type URLSource struct {
	// secretKeyRef names a Secret and its key holding the URL.
	// +required
	SecretKeyRef SecretKeySelector `json:"secretKeyRef,omitzero"`
}

// SecretKeySelector names a key of a Secret in the sink's namespace.
type SecretKeySelector struct {
	// name of the Secret.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Name string `json:"name,omitempty"`

	// key in the Secret.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[-._a-zA-Z0-9]+$`
	Key string `json:"key,omitempty"`
}

// TLSConfig tunes certificate verification of a sink.
// +kubebuilder:validation:MinProperties=0
type TLSConfig struct {
	// caSecretRef names a Secret in the sink's namespace whose key (default
	// "ca.crt") holds PEM CA certificates trusted in addition to the system roots.
	// +optional
	CASecretRef *SecretKeyReference `json:"caSecretRef,omitempty"`

	// certSecretRef names a Secret of type kubernetes.io/tls (keys tls.crt and tls.key)
	// whose certificate the operator presents to the sink (mutual TLS). HTTP sinks only.
	// +optional
	CertSecretRef *LocalSecretReference `json:"certSecretRef,omitempty"`

	// insecureSkipVerify disables certificate verification. For tests only; default false.
	// +optional
	InsecureSkipVerify bool `json:"insecureSkipVerify,omitempty"`
}

// LocalSecretReference names a Secret in the sink's namespace.
type LocalSecretReference struct {
	// name of the Secret.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Name string `json:"name,omitempty"`
}

// SecretKeyReference names a key of a Secret in the sink's namespace.
type SecretKeyReference struct {
	// name of the Secret.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Name string `json:"name,omitempty"`

	// key in the Secret; defaults to "ca.crt".
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[-._a-zA-Z0-9]+$`
	Key string `json:"key,omitempty"`
}

// KafkaSink publishes CloudEvents to a Kafka topic, one record per event, by the CloudEvents
// Kafka protocol binding. The record key is the object's namespace/name.
// +kubebuilder:validation:XValidation:rule="!has(self.contentMode) || self.contentMode != 'batched'",message="contentMode batched is for HTTP sinks: a Kafka sink takes binary or structured",fieldPath=".contentMode"
// +kubebuilder:validation:XValidation:rule="!has(self.tls) || !has(self.tls.certSecretRef)",message="tls.certSecretRef: a Kafka sink presents no client certificate; log in with sasl",fieldPath=".tls.certSecretRef"
type KafkaSink struct {
	// brokers are the bootstrap addresses of the Kafka cluster, host:port.
	// +required
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=32
	Brokers []BrokerAddress `json:"brokers,omitempty"`

	// topic every event is published to. The operator does not create it.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=249
	// +kubebuilder:validation:Pattern=`^[a-zA-Z0-9._-]+$`
	// +kubebuilder:validation:XValidation:rule="self != '.' && self != '..'",message="sink.kafka.topic may not be \".\" or \"..\""
	Topic string `json:"topic,omitempty"`

	// contentMode is binary (the default: the attributes in ce_ headers, the data as the
	// record value) or structured (the whole event as application/cloudevents+json).
	// +optional
	ContentMode ContentMode `json:"contentMode,omitempty"`

	// tls connects over TLS: caSecretRef adds CAs to the system roots, insecureSkipVerify
	// disables verification. Without it the connection is plain TCP.
	// +optional
	TLS *TLSConfig `json:"tls,omitempty"`

	// sasl logs in with a SASL user.
	// +optional
	SASL KafkaSASL `json:"sasl,omitzero"`
}

// BrokerAddress is a broker's host:port; an IPv6 address is written in brackets.
// +kubebuilder:validation:MinLength=3
// +kubebuilder:validation:MaxLength=261
// +kubebuilder:validation:Pattern=`^([a-zA-Z0-9]([-a-zA-Z0-9.]*[a-zA-Z0-9])?|\[[0-9a-fA-F:.]+\]):[0-9]{1,5}$`
type BrokerAddress string

// KafkaSASLMechanism is how a Kafka sink's SASL user logs in.
// +kubebuilder:validation:Enum=PLAIN;SCRAM-SHA-256;SCRAM-SHA-512
type KafkaSASLMechanism string

const (
	// KafkaSASLPlain sends the password as it is: use it over TLS only.
	KafkaSASLPlain KafkaSASLMechanism = "PLAIN"
	// KafkaSASLScramSHA256 proves the password without sending it (SCRAM-SHA-256).
	KafkaSASLScramSHA256 KafkaSASLMechanism = "SCRAM-SHA-256"
	// KafkaSASLScramSHA512 proves the password without sending it (SCRAM-SHA-512).
	KafkaSASLScramSHA512 KafkaSASLMechanism = "SCRAM-SHA-512"
)

// KafkaSASL is the SASL user a Kafka sink logs in as.
type KafkaSASL struct {
	// mechanism is PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.
	// +required
	Mechanism KafkaSASLMechanism `json:"mechanism,omitempty"`

	// secretRef names a Secret in the sink's namespace with the keys username and password.
	// +required
	SecretRef LocalSecretReference `json:"secretRef,omitzero"`
}

// NATSSink publishes CloudEvents to NATS JetStream, one message per event, by the
// CloudEvents NATS protocol binding, and waits for the stream's acknowledgement. The
// message id (Nats-Msg-Id) is the event id, so a stream's duplicate window drops repeats.
// +kubebuilder:validation:XValidation:rule="!has(self.contentMode) || self.contentMode != 'batched'",message="contentMode batched is for HTTP sinks: a NATS sink takes binary or structured",fieldPath=".contentMode"
// +kubebuilder:validation:XValidation:rule="!has(self.tls) || !has(self.tls.certSecretRef)",message="tls.certSecretRef: a NATS sink presents no client certificate; authenticate with credentials",fieldPath=".tls.certSecretRef"
type NATSSink struct {
	// servers are the URLs of NATS servers of one cluster: nats://host:port, or
	// tls://host:port (port 4222 when left out). Credentials go in credentials, not in
	// the URLs.
	// +required
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=32
	Servers []NATSServerURL `json:"servers,omitempty"`

	// subject is the subject template, default "k8s.{namespace}.{resource}.{name}.{type}".
	// Placeholders: {namespace}, {name}, {resource}, {group}, {version}, {kind} and {type}
	// (added, updated, deleted or resync). Every subject it makes must be bound to a stream.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=255
	// +kubebuilder:validation:Pattern=`^[^\s*>]+$`
	Subject string `json:"subject,omitempty"`

	// contentMode is binary (the default: the attributes in ce- headers, the data as the
	// payload) or structured (the whole event as application/cloudevents+json).
	// +optional
	ContentMode ContentMode `json:"contentMode,omitempty"`

	// tls requires TLS: caSecretRef adds CAs to the system roots, insecureSkipVerify
	// disables verification. A server that does not offer TLS is refused.
	// +optional
	TLS *TLSConfig `json:"tls,omitempty"`

	// credentials authenticate the connection; without them it is anonymous.
	// +optional
	Credentials NATSCredentials `json:"credentials,omitzero"`
}

// NATSServerURL is the URL of a NATS server: nats://host[:port] or tls://host[:port].
// +kubebuilder:validation:MinLength=8
// +kubebuilder:validation:MaxLength=512
// +kubebuilder:validation:XValidation:rule="isURL(self) && url(self).getScheme() in ['nats', 'tls'] && size(url(self).getHostname()) > 0 && !self.contains('@')",message="sink.nats.servers: each must be a nats:// or tls:// URL with a host and no credentials"
type NATSServerURL string

// NATSCredentials name the Secret a NATS sink authenticates with.
type NATSCredentials struct {
	// secretRef names a Secret in the sink's namespace holding one of: the key token; the
	// keys username and password; or the key nkeySeed, a user NKey seed (SU...).
	// +required
	SecretRef LocalSecretReference `json:"secretRef,omitzero"`
}

// LogSink writes events to the operator's log. It has no settings.
// +kubebuilder:validation:MinProperties=0
type LogSink struct{}

// DeliverySpec tunes how events reach the sink. Every field is optional; the defaults ride
// out a sink outage of about seven minutes without losing events.
// +kubebuilder:validation:MinProperties=0
type DeliverySpec struct {
	// timeout of one delivery attempt, such as "10s" (the default); at most "1h".
	// +optional
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]{1,6}([.][0-9]{1,9})?(ms|s|m|h))+$') && duration(self) > duration('0s') && duration(self) <= duration('1h')",message="delivery.timeout must be above 0s and at most 1h"
	Timeout *Duration `json:"timeout,omitempty"`

	// retry says how often and how patiently a failed delivery is tried again.
	// +optional
	Retry *RetryPolicy `json:"retry,omitempty"`

	// maxQueueSize is how many events may wait for delivery (default 1000). When the
	// queue is full new events are dropped and counted in status.eventsDropped.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100000
	MaxQueueSize *int32 `json:"maxQueueSize,omitempty"`

	// parallelism is how many deliveries may be in flight at once (default 4). Events
	// of the same object are always delivered one after another, in order.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=64
	Parallelism *int32 `json:"parallelism,omitempty"`

	// deadLetterSink receives the events whose delivery failed for good, with the
	// extension attributes deliveryerror and deliveryattempts. Without it they are dropped
	// and counted in status.eventsFailed.
	// +optional
	DeadLetterSink *Sink `json:"deadLetterSink,omitempty"`

	// coalesce merges bursts of changes to one object into one event with its latest
	// state. Off by default.
	// +optional
	Coalesce CoalesceSpec `json:"coalesce,omitzero"`

	// rateLimit bounds how many events per second go to the sink. Over the limit, events
	// wait and an object's updates merge into one with its latest state (as coalesce
	// does), so the sink always gets each object's end state; nothing is dropped for the
	// limit. Off by default.
	// +optional
	RateLimit RateLimitSpec `json:"rateLimit,omitzero"`
}

// CoalesceSpec holds each object's changes for a window and merges its updates.
type CoalesceSpec struct {
	// window is how long an object's first change waits, such as "1s": the updates of the
	// object arriving meanwhile are merged into it, so the sink gets one event, with the
	// latest object, the object as it was before the first change (for includeOldObject
	// and filters), the union of the changed paths, and the extension attribute coalesced
	// saying how many changes it stands for. An addition followed by updates stays one
	// addition of the latest state. A deletion is never merged: it goes right after the
	// object's held event. From "1ms" to "1h".
	// +required
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]{1,6}([.][0-9]{1,9})?(ms|s|m|h))+$') && duration(self) >= duration('1ms') && duration(self) <= duration('1h')",message="coalesce.window must be from 1ms to 1h"
	Window Duration `json:"window,omitempty"`
}

// RateLimitSpec is a token bucket: eventsPerSecond sustained, burst at once.
type RateLimitSpec struct {
	// eventsPerSecond is the sustained rate of events to the sink.
	// +required
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100000
	EventsPerSecond int32 `json:"eventsPerSecond,omitempty"`

	// burst is how many events may go at once after a quiet time (default eventsPerSecond).
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100000
	Burst int32 `json:"burst,omitempty"`
}

// RetryPolicy is exponential backoff with jitter.
// +kubebuilder:validation:MinProperties=0
// +kubebuilder:validation:XValidation:rule="!has(self.backoff) || !has(self.maxBackoff) || !self.backoff.matches('^([0-9]{1,6}([.][0-9]{1,9})?(ms|s|m|h))+$') || !self.maxBackoff.matches('^([0-9]{1,6}([.][0-9]{1,9})?(ms|s|m|h))+$') || duration(self.backoff) <= duration(self.maxBackoff)",message="retry.backoff must not exceed retry.maxBackoff",fieldPath=".backoff"
type RetryPolicy struct {
	// maxAttempts counts the first attempt too (default 12); 1 disables retries.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	MaxAttempts *int32 `json:"maxAttempts,omitempty"`

	// backoff before the second attempt (default "1s", or maxBackoff when that is
	// shorter); it doubles for each attempt after. From "1ms" to "1h".
	// +optional
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]{1,6}([.][0-9]{1,9})?(ms|s|m|h))+$') && duration(self) >= duration('1ms') && duration(self) <= duration('1h')",message="retry.backoff must be from 1ms to 1h"
	Backoff *Duration `json:"backoff,omitempty"`

	// maxBackoff caps the wait between attempts (default "60s"). A Retry-After header
	// from the sink is honoured up to this cap. From "1ms" to "24h".
	// +optional
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]{1,6}([.][0-9]{1,9})?(ms|s|m|h))+$') && duration(self) >= duration('1ms') && duration(self) <= duration('24h')",message="retry.maxBackoff must be from 1ms to 24h"
	MaxBackoff *Duration `json:"maxBackoff,omitempty"`
}

// WatchSubscriptionStatus is what the operator observed and did for a subscription.
type WatchSubscriptionStatus struct {
	// conditions hold the Ready condition: True while watching, Unknown while starting,
	// False with a reason when something is wrong.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MinItems=0
	// +kubebuilder:validation:MaxItems=8
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// observedGeneration is the spec generation the status describes.
	// +optional
	// +kubebuilder:validation:Minimum=1
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// resource is the watched resource as group/version/resource, for display.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=512
	Resource string `json:"resource,omitempty"`

	// sink is the kind of sink in use (webhook, service, log, kafka or nats), or the sink
	// object named (WatchSink/<name>, ClusterWatchSink/<name>), for display.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=270
	Sink string `json:"sink,omitempty"`

	// kind the resource resolved to through discovery.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Kind string `json:"kind,omitempty"`

	// namespaced tells whether the resource is namespaced.
	// +optional
	Namespaced *bool `json:"namespaced,omitempty"`

	// eventsObserved counts the changes that matched this subscription since it was created.
	// +optional
	EventsObserved int64 `json:"eventsObserved,omitempty"`

	// eventsDelivered counts the events the sink accepted.
	// +optional
	EventsDelivered int64 `json:"eventsDelivered,omitempty"`

	// eventsFailed counts the events that could not be delivered, after every retry
	// (including those then sent to the dead-letter sink) or because the queue was full.
	// +optional
	EventsFailed int64 `json:"eventsFailed,omitempty"`

	// eventsDropped counts the events dropped because the delivery queue was full.
	// +optional
	EventsDropped int64 `json:"eventsDropped,omitempty"`

	// eventsCoalesced counts the changes merged into a later event of the same object
	// (delivery.coalesce, delivery.rateLimit) instead of being sent on their own.
	// +optional
	EventsCoalesced int64 `json:"eventsCoalesced,omitempty"`

	// eventsQueued is how many events were waiting for delivery or being delivered (retries
	// included) when the status was last written: the depth of the delivery queue, bounded
	// by delivery.maxQueueSize.
	// +optional
	EventsQueued int64 `json:"eventsQueued,omitempty"`

	// lastEventTime is when the last matching change was observed.
	// +optional
	LastEventTime *metav1.Time `json:"lastEventTime,omitempty"`

	// lastDeliveryTime is when the sink last accepted an event.
	// +optional
	LastDeliveryTime *metav1.Time `json:"lastDeliveryTime,omitempty"`

	// lastResyncTime is when the operator last could not resume this subscription from its
	// checkpoint (the API server no longer had the changes since, or the subscription came
	// back too late after a restart) and sent it an io.dynamicnotifier.resync event: changes
	// were re-listed, and deletions in the gap may be missing.
	// +optional
	LastResyncTime *metav1.Time `json:"lastResyncTime,omitempty"`

	// replica is the operator replica (its pod name) that serves this subscription: watches
	// its streams, delivers its events and writes this status. Set when the operator runs
	// with --sharding=Leases; absent with a single leader.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Replica string `json:"replica,omitempty"`
}

// WatchSubscription tells the operator to watch a Kubernetes resource and deliver its
// changes to a sink as CloudEvents.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=wsub,categories=notifier
// +kubebuilder:printcolumn:name="Resource",type=string,JSONPath=`.status.resource`
// +kubebuilder:printcolumn:name="Sink",type=string,JSONPath=`.status.sink`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:printcolumn:name="Replica",type=string,priority=1,JSONPath=`.status.replica`
// +kubebuilder:printcolumn:name="Message",type=string,priority=1,JSONPath=`.status.conditions[?(@.type=="Ready")].message`
type WatchSubscription struct {
	metav1.TypeMeta `json:",inline"`

	// metadata is the standard object metadata.
	// +optional
	metav1.ObjectMeta `json:"metadata,omitzero"`

	// spec says what to watch and where to deliver.
	// +required
	Spec WatchSubscriptionSpec `json:"spec,omitzero"`

	// status is what the operator observed.
	// +optional
	Status WatchSubscriptionStatus `json:"status,omitzero"`
}

// +kubebuilder:object:root=true

// WatchSubscriptionList contains a list of WatchSubscription.
type WatchSubscriptionList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitzero"`
	Items           []WatchSubscription `json:"items"`
}

func init() {
	SchemeBuilder.Register(func(s *runtime.Scheme) error {
		s.AddKnownTypes(SchemeGroupVersion, &WatchSubscription{}, &WatchSubscriptionList{})
		return nil
	})
}
