package sink

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strconv"
	"time"
)

// Headers of a signed request, by the Standard Webhooks scheme (www.standardwebhooks.com),
// so receivers can verify with its libraries.
const (
	HeaderWebhookID        = "Webhook-Id"
	HeaderWebhookTimestamp = "Webhook-Timestamp"
	HeaderWebhookSignature = "Webhook-Signature"
)

// whsecPrefix marks a Standard Webhooks secret: base64 after it.
const whsecPrefix = "whsec_"

// ParseSigningKey reads a signing key from a Secret value: "whsec_<base64>" is decoded (the
// form Standard Webhooks tools generate); any other value is the key itself, as before.
// Errors never repeat the value.
func ParseSigningKey(secret []byte) ([]byte, error) {
	encoded, ok := bytes.CutPrefix(bytes.TrimSpace(secret), []byte(whsecPrefix))
	if !ok {
		if len(secret) == 0 {
			return nil, errors.New("the signing key is empty")
		}
		return secret, nil
	}
	key := make([]byte, base64.StdEncoding.DecodedLen(len(encoded)))
	n, err := base64.StdEncoding.Decode(key, encoded)
	if err != nil {
		return nil, errors.New("the signing key starts with whsec_ but the rest is not base64")
	}
	if n == 0 {
		return nil, errors.New("the signing key is an empty whsec_ secret")
	}
	return key[:n], nil
}

// sign is the webhook-signature value: "v1," and the base64 HMAC-SHA256 of
// "<id>.<unix seconds>.<body>".
func sign(key []byte, id string, t time.Time, body []byte) string {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id))
	mac.Write([]byte{'.'})
	mac.Write(strconv.AppendInt(nil, t.Unix(), 10))
	mac.Write([]byte{'.'})
	mac.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// batchID is the webhook-id of a batched request: "batch:" and the hex SHA-256 of its
// event ids joined by newlines, so a retried batch keeps its id.
func batchID(msgs []Message) string {
	h := sha256.New()
	for i, m := range msgs {
		if i > 0 {
			h.Write([]byte{'\n'})
		}
		h.Write([]byte(m.Event.ID()))
	}
	return "batch:" + hex.EncodeToString(h.Sum(nil))
}
