package sink

import (
	"maps"
	"slices"
	"unicode/utf8"
)

// Structured and batched content types of the CloudEvents HTTP binding.
const (
	StructuredContentType = "application/cloudevents+json"
	BatchContentType      = "application/cloudevents-batch+json"
)

// appendStructured appends msg as one structured-mode CloudEvent (JSON format). Written by
// hand rather than through the SDK: a batch encodes every event of a request, and the
// event data is already JSON, so it is embedded as it is.
func appendStructured(buf []byte, msg Message) ([]byte, error) {
	data, err := messageData(msg)
	if err != nil {
		return buf, err
	}
	ev := msg.Event
	buf = append(buf, `{"specversion":"1.0","id":`...)
	buf = appendJSONString(buf, ev.ID())
	buf = append(buf, `,"source":`...)
	buf = appendJSONString(buf, msg.Source)
	buf = append(buf, `,"type":`...)
	buf = appendJSONString(buf, CloudEventType(ev.Type))
	buf = append(buf, `,"subject":`...)
	buf = appendJSONString(buf, ev.ObjectPath())
	buf = append(buf, `,"time":"`...)
	buf = append(buf, ev.Time()...)
	buf = append(buf, `","datacontenttype":`...)
	buf = appendJSONString(buf, msg.dataContentType())
	// Sorted, so a message always encodes the same way. Values are masked (MaskURLsIn): a
	// dead letter's deliveryerror may name a sink URL.
	for _, k := range sortedKeys(msg.Extensions) {
		buf = append(buf, ',')
		buf = appendJSONString(buf, k)
		buf = append(buf, ':')
		buf = appendJSONString(buf, MaskURLsIn(msg.Extensions[k]))
	}
	buf = append(buf, `,"data":`...)
	if msg.jsonData() {
		buf = append(buf, data...)
	} else {
		buf = appendJSONString(buf, string(data))
	}
	return append(buf, '}'), nil
}

// AttributesSize is room for the attributes of one event in a structured or batched body,
// so the buffer rarely grows and batches can be sized before they are encoded.
const AttributesSize = 512

func sortedKeys(m map[string]string) []string {
	if len(m) == 0 {
		return nil
	}
	return slices.Sorted(maps.Keys(m))
}

// structuredBody encodes msg as one application/cloudevents+json object.
func structuredBody(msg Message) ([]byte, error) {
	data, err := messageData(msg)
	if err != nil {
		return nil, err
	}
	return appendStructured(make([]byte, 0, AttributesSize+len(data)), msg)
}

// batchBody encodes msgs as one application/cloudevents-batch+json array.
func batchBody(msgs []Message) ([]byte, error) {
	size := 2
	for _, m := range msgs {
		data, err := messageData(m)
		if err != nil {
			return nil, err
		}
		size += AttributesSize + len(data)
	}
	buf := make([]byte, 0, size)
	buf = append(buf, '[')
	for i, m := range msgs {
		if i > 0 {
			buf = append(buf, ',')
		}
		var err error
		if buf, err = appendStructured(buf, m); err != nil {
			return nil, err
		}
	}
	return append(buf, ']'), nil
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string. Invalid UTF-8 becomes U+FFFD, as
// encoding/json does; < > & stay as they are, since no HTML embeds this.
func appendJSONString(buf []byte, s string) []byte {
	buf = append(buf, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			buf = append(buf, s[start:i]...)
			switch c {
			case '"', '\\':
				buf = append(buf, '\\', c)
			case '\n':
				buf = append(buf, '\\', 'n')
			case '\r':
				buf = append(buf, '\\', 'r')
			case '\t':
				buf = append(buf, '\\', 't')
			default:
				buf = append(buf, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			buf = append(buf, s[start:i]...)
			buf = append(buf, `\ufffd`...)
			i += size
			start = i
			continue
		}
		// U+2028 and U+2029 are valid JSON but break JavaScript parsers.
		if r == '\u2028' || r == '\u2029' {
			buf = append(buf, s[start:i]...)
			buf = append(buf, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	buf = append(buf, s[start:]...)
	return append(buf, '"')
}
