package samples

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// sinkShape is what the service behind a sink sample accepts, as its documentation states
// it: the checks are the service's rules, not a copy of our template, so a sample that
// renders something the service would refuse fails here.
type sinkShape struct {
	// headers are the values of the sink's headersFrom Secret, when it has one.
	headers map[string]string
	// check returns why the service would refuse the request, or nil.
	check func(header http.Header, body []byte) error
}

// sinkShapes, by the sink samples' metadata.name. Every sink sample needs one.
func sinkShapes() map[string]sinkShape {
	return map[string]sinkShape{
		"slack":                 {check: slackMessage},
		"teams-platform-alerts": {check: teamsWorkflowCard},
		"discord":               {check: discordWebhook},
		"github-dispatch": {check: githubRepositoryDispatch, headers: map[string]string{
			"Authorization":        "Bearer github_pat_test",
			"Accept":               "application/vnd.github+json",
			"X-GitHub-Api-Version": "2022-11-28",
		}},
	}
}

// jsonObject decodes a JSON object body sent as application/json, keeping numbers exact.
func jsonObject(header http.Header, body []byte) (map[string]any, error) {
	if mt, _, err := mime.ParseMediaType(header.Get("Content-Type")); err != nil || mt != "application/json" {
		return nil, fmt.Errorf("Content-Type %q, want application/json", header.Get("Content-Type"))
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var out map[string]any
	if err := dec.Decode(&out); err != nil {
		return nil, fmt.Errorf("the body is not a JSON object: %w", err)
	}
	return out, nil
}

// onlyKeys refuses keys the service does not define.
func onlyKeys(where string, m map[string]any, allowed ...string) error {
	for k := range m {
		if !slices.Contains(allowed, k) {
			return fmt.Errorf("%s: unknown field %q", where, k)
		}
	}
	return nil
}

// text reads a string field of at most limit characters; required refuses a missing or empty one.
func text(where string, m map[string]any, key string, limit int, required bool) (string, error) {
	v, ok := m[key]
	if !ok {
		if required {
			return "", fmt.Errorf("%s.%s is required", where, key)
		}
		return "", nil
	}
	s, ok := v.(string)
	switch {
	case !ok:
		return "", fmt.Errorf("%s.%s is a %T, want a string", where, key, v)
	case required && s == "":
		return "", fmt.Errorf("%s.%s is empty", where, key)
	case utf8.RuneCountInString(s) > limit:
		return "", fmt.Errorf("%s.%s has %d characters, at most %d", where, key, utf8.RuneCountInString(s), limit)
	}
	return s, nil
}

// list reads an array field of at most limit items.
func list(where string, m map[string]any, key string, limit int, required bool) ([]any, error) {
	v, ok := m[key]
	if !ok {
		if required {
			return nil, fmt.Errorf("%s.%s is required", where, key)
		}
		return nil, nil
	}
	l, ok := v.([]any)
	switch {
	case !ok:
		return nil, fmt.Errorf("%s.%s is a %T, want an array", where, key, v)
	case required && len(l) == 0:
		return nil, fmt.Errorf("%s.%s is empty", where, key)
	case len(l) > limit:
		return nil, fmt.Errorf("%s.%s has %d items, at most %d", where, key, len(l), limit)
	}
	return l, nil
}

func object(where string, v any) (map[string]any, error) {
	m, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%s is a %T, want an object", where, v)
	}
	return m, nil
}

// slackMessage checks a Slack incoming-webhook message with Block Kit blocks: text or
// blocks; at most 50 blocks; a header's text is plain_text of at most 150 characters, a
// section's text at most 3000, a context at most 10 elements.
func slackMessage(header http.Header, body []byte) error {
	msg, err := jsonObject(header, body)
	if err != nil {
		return err
	}
	if err := onlyKeys("message", msg, "text", "blocks", "attachments", "thread_ts", "mrkdwn",
		"unfurl_links", "unfurl_media"); err != nil {
		return err
	}
	txt, err := text("message", msg, "text", 40000, false)
	if err != nil {
		return err
	}
	blocks, err := list("message", msg, "blocks", 50, false)
	if err != nil {
		return err
	}
	if txt == "" && len(blocks) == 0 {
		return errors.New("message: text or blocks is required (no_text)")
	}
	for i, b := range blocks {
		where := fmt.Sprintf("blocks[%d]", i)
		block, err := object(where, b)
		if err != nil {
			return err
		}
		if _, err := text(where, block, "block_id", 255, false); err != nil {
			return err
		}
		switch block["type"] {
		case "header":
			if err := onlyKeys(where, block, "type", "text", "block_id"); err != nil {
				return err
			}
			if err := slackText(where+".text", block["text"], 150, "plain_text"); err != nil {
				return err
			}
		case "section":
			if err := onlyKeys(where, block, "type", "text", "fields", "accessory", "block_id", "expand"); err != nil {
				return err
			}
			fields, err := list(where, block, "fields", 10, false)
			if err != nil {
				return err
			}
			if _, has := block["text"]; !has && len(fields) == 0 {
				return fmt.Errorf("%s: a section needs text or fields", where)
			}
			if t, has := block["text"]; has {
				if err := slackText(where+".text", t, 3000, "plain_text", "mrkdwn"); err != nil {
					return err
				}
			}
			for j, f := range fields {
				if err := slackText(fmt.Sprintf("%s.fields[%d]", where, j), f, 2000, "plain_text", "mrkdwn"); err != nil {
					return err
				}
			}
		case "context":
			if err := onlyKeys(where, block, "type", "elements", "block_id"); err != nil {
				return err
			}
			elements, err := list(where, block, "elements", 10, true)
			if err != nil {
				return err
			}
			for j, e := range elements {
				if err := slackText(fmt.Sprintf("%s.elements[%d]", where, j), e, 3000, "plain_text", "mrkdwn"); err != nil {
					return err
				}
			}
		case "divider":
			if err := onlyKeys(where, block, "type", "block_id"); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%s: a block of type %v this check does not know", where, block["type"])
		}
	}
	return nil
}

// slackText checks a Block Kit text object.
func slackText(where string, v any, limit int, types ...string) error {
	t, err := object(where, v)
	if err != nil {
		return err
	}
	kind, _ := t["type"].(string)
	if !slices.Contains(types, kind) {
		return fmt.Errorf("%s.type is %v, want one of %v", where, t["type"], types)
	}
	allowed := []string{"type", "text", "emoji"}
	if kind == "mrkdwn" {
		allowed = []string{"type", "text", "verbatim"}
	}
	if err := onlyKeys(where, t, allowed...); err != nil {
		return err
	}
	_, err = text(where, t, "text", limit, true)
	return err
}

// teamsWorkflowCard checks the message Teams' Workflows webhook ("Post to a channel when a
// webhook request is received") posts: type "message", attachments holding Adaptive Cards of
// a version Teams renders (up to 1.5), and at most 28 KB.
func teamsWorkflowCard(header http.Header, body []byte) error {
	if len(body) > 28<<10 {
		return fmt.Errorf("%d bytes; Teams messages are at most 28 KB", len(body))
	}
	msg, err := jsonObject(header, body)
	if err != nil {
		return err
	}
	if msg["type"] != "message" {
		return fmt.Errorf("message.type is %v, want \"message\"", msg["type"])
	}
	attachments, err := list("message", msg, "attachments", 10, true)
	if err != nil {
		return err
	}
	for i, a := range attachments {
		where := fmt.Sprintf("attachments[%d]", i)
		att, err := object(where, a)
		if err != nil {
			return err
		}
		if err := onlyKeys(where, att, "contentType", "contentUrl", "content"); err != nil {
			return err
		}
		if att["contentType"] != "application/vnd.microsoft.card.adaptive" {
			return fmt.Errorf("%s.contentType is %v, want application/vnd.microsoft.card.adaptive", where, att["contentType"])
		}
		if u, has := att["contentUrl"]; has && u != nil {
			return fmt.Errorf("%s.contentUrl must be null for an inline card", where)
		}
		card, err := object(where+".content", att["content"])
		if err != nil {
			return err
		}
		if card["type"] != "AdaptiveCard" {
			return fmt.Errorf("%s.content.type is %v, want AdaptiveCard", where, card["type"])
		}
		version, _ := card["version"].(string)
		if !slices.Contains([]string{"1.0", "1.1", "1.2", "1.3", "1.4", "1.5"}, version) {
			return fmt.Errorf("%s.content.version is %v; Teams renders 1.0 to 1.5", where, card["version"])
		}
		elements, err := list(where+".content", card, "body", 100, true)
		if err != nil {
			return err
		}
		for j, e := range elements {
			if err := adaptiveElement(fmt.Sprintf("%s.content.body[%d]", where, j), e); err != nil {
				return err
			}
		}
	}
	return nil
}

// adaptiveElement checks the card elements the sample uses; others are refused, so a new
// one gets its rules here first.
func adaptiveElement(where string, v any) error {
	e, err := object(where, v)
	if err != nil {
		return err
	}
	switch e["type"] {
	case "TextBlock":
		if err := onlyKeys(where, e, "type", "text", "size", "weight", "wrap", "color", "isSubtle",
			"spacing", "separator"); err != nil {
			return err
		}
		_, err := text(where, e, "text", 10000, true)
		return err
	case "FactSet":
		facts, err := list(where, e, "facts", 100, true)
		if err != nil {
			return err
		}
		for i, f := range facts {
			fact, err := object(fmt.Sprintf("%s.facts[%d]", where, i), f)
			if err != nil {
				return err
			}
			if err := onlyKeys(where, fact, "title", "value"); err != nil {
				return err
			}
			if _, err := text(where, fact, "title", 1000, true); err != nil {
				return err
			}
			if _, err := text(where, fact, "value", 10000, true); err != nil {
				return err
			}
		}
		return nil
	}
	return fmt.Errorf("%s: an element of type %v this check does not know", where, e["type"])
}

// discordWebhook checks a Discord Execute Webhook body: content, embeds or both; content at
// most 2000 characters; a username Discord allows; at most 10 embeds whose title, description
// and fields keep to their limits and 6000 characters in all; colors are integers.
func discordWebhook(header http.Header, body []byte) error {
	msg, err := jsonObject(header, body)
	if err != nil {
		return err
	}
	if err := onlyKeys("message", msg, "content", "username", "avatar_url", "tts", "embeds", "allowed_mentions",
		"flags", "thread_name"); err != nil {
		return err
	}
	content, err := text("message", msg, "content", 2000, false)
	if err != nil {
		return err
	}
	name, err := text("message", msg, "username", 80, false)
	if err != nil {
		return err
	}
	for _, banned := range []string{"@", "#", ":", "```", "discord"} {
		if strings.Contains(strings.ToLower(name), banned) {
			return fmt.Errorf("message.username %q contains %q, which Discord refuses", name, banned)
		}
	}
	embeds, err := list("message", msg, "embeds", 10, false)
	if err != nil {
		return err
	}
	if content == "" && len(embeds) == 0 {
		return errors.New("message: content or embeds is required (Cannot send an empty message)")
	}
	if am, has := msg["allowed_mentions"]; has {
		mentions, err := object("allowed_mentions", am)
		if err != nil {
			return err
		}
		parse, err := list("allowed_mentions", mentions, "parse", 3, false)
		if err != nil {
			return err
		}
		for _, p := range parse {
			if !slices.Contains([]any{"roles", "users", "everyone"}, p) {
				return fmt.Errorf("allowed_mentions.parse holds %v", p)
			}
		}
	}
	total := 0
	for i, e := range embeds {
		chars, err := discordEmbed(fmt.Sprintf("embeds[%d]", i), e)
		if err != nil {
			return err
		}
		total += chars
	}
	if total > 6000 {
		return fmt.Errorf("the embeds hold %d characters, at most 6000", total)
	}
	return nil
}

// discordEmbed checks one embed of a Discord Execute Webhook body and returns the characters
// it counts towards the 6000 all embeds may hold.
func discordEmbed(where string, e any) (int, error) {
	embed, err := object(where, e)
	if err != nil {
		return 0, err
	}
	if err := onlyKeys(where, embed, "title", "description", "url", "timestamp", "color", "fields",
		"footer", "author"); err != nil {
		return 0, err
	}
	title, err := text(where, embed, "title", 256, false)
	if err != nil {
		return 0, err
	}
	desc, err := text(where, embed, "description", 4096, false)
	if err != nil {
		return 0, err
	}
	total := utf8.RuneCountInString(title) + utf8.RuneCountInString(desc)
	if c, has := embed["color"]; has {
		n, ok := c.(json.Number)
		v, err := n.Int64()
		if !ok || err != nil || v < 0 || v > 0xFFFFFF {
			return 0, fmt.Errorf("%s.color is %v, want an integer RGB value", where, c)
		}
	}
	if ts, has := embed["timestamp"]; has {
		s, _ := ts.(string)
		if _, err := time.Parse(time.RFC3339, s); err != nil {
			return 0, fmt.Errorf("%s.timestamp %v is not ISO 8601", where, ts)
		}
	}
	fields, err := list(where, embed, "fields", 25, false)
	if err != nil {
		return 0, err
	}
	for j, f := range fields {
		fw := fmt.Sprintf("%s.fields[%d]", where, j)
		field, err := object(fw, f)
		if err != nil {
			return 0, err
		}
		if err := onlyKeys(fw, field, "name", "value", "inline"); err != nil {
			return 0, err
		}
		n, err := text(fw, field, "name", 256, true)
		if err != nil {
			return 0, err
		}
		v, err := text(fw, field, "value", 1024, true)
		if err != nil {
			return 0, err
		}
		total += utf8.RuneCountInString(n) + utf8.RuneCountInString(v)
	}
	return total, nil
}

// githubRepositoryDispatch checks a request to GitHub's "create a repository dispatch event":
// a bearer token, a User-Agent (GitHub refuses requests without one), the API's media type
// and version headers, and a body of event_type (at most 100 characters) and client_payload
// (an object of at most 10 top-level properties).
func githubRepositoryDispatch(header http.Header, body []byte) error {
	if !strings.HasPrefix(header.Get("Authorization"), "Bearer ") {
		return errors.New("no Authorization: Bearer token (401 Requires authentication)")
	}
	if header.Get("User-Agent") == "" {
		return errors.New("no User-Agent (403 Request forbidden by administrative rules)")
	}
	if header.Get("Accept") != "application/vnd.github+json" || header.Get("X-GitHub-Api-Version") == "" {
		return fmt.Errorf("Accept %q and X-GitHub-Api-Version %q: want application/vnd.github+json and a version",
			header.Get("Accept"), header.Get("X-GitHub-Api-Version"))
	}
	msg, err := jsonObject(header, body)
	if err != nil {
		return err
	}
	if err := onlyKeys("body", msg, "event_type", "client_payload"); err != nil {
		return err
	}
	if _, err := text("body", msg, "event_type", 100, true); err != nil {
		return err
	}
	if p, has := msg["client_payload"]; has {
		payload, err := object("body.client_payload", p)
		if err != nil {
			return err
		}
		if len(payload) > 10 {
			return fmt.Errorf("body.client_payload has %d top-level properties, at most 10", len(payload))
		}
	}
	return nil
}

// TestShapeChecksRefuseWhatTheServicesRefuse: each check passes a body its service accepts
// and refuses ones it documents as wrong, so a sample that breaks a rule cannot pass.
func TestShapeChecksRefuseWhatTheServicesRefuse(t *testing.T) {
	jsonHeader := http.Header{"Content-Type": {"application/json"}}
	github := http.Header{"Content-Type": {"application/json"}, "Authorization": {"Bearer x"}, "User-Agent": {"a"},
		"Accept": {"application/vnd.github+json"}, "X-Github-Api-Version": {"2022-11-28"}}
	long := strings.Repeat("x", 151)
	card := func(version, element string) string {
		return `{"type":"message","attachments":[{"contentType":"application/vnd.microsoft.card.adaptive",` +
			`"contentUrl":null,"content":{"type":"AdaptiveCard","version":"` + version + `","body":[` + element + `]}}]}`
	}
	cases := []struct {
		name   string
		check  func(http.Header, []byte) error
		header http.Header
		body   string
		ok     bool
	}{
		{"slack: text and blocks", slackMessage, jsonHeader,
			`{"text":"x","blocks":[{"type":"header","text":{"type":"plain_text","text":"h"}},` +
				`{"type":"section","text":{"type":"mrkdwn","text":"*s*"}},` +
				`{"type":"context","elements":[{"type":"mrkdwn","text":"c"}]}]}`, true},
		{"slack: empty", slackMessage, jsonHeader, `{}`, false},
		{"slack: a header in mrkdwn", slackMessage, jsonHeader,
			`{"blocks":[{"type":"header","text":{"type":"mrkdwn","text":"h"}}]}`, false},
		{"slack: a header over 150", slackMessage, jsonHeader,
			`{"blocks":[{"type":"header","text":{"type":"plain_text","text":"` + long + `"}}]}`, false},
		{"slack: not JSON", slackMessage, http.Header{"Content-Type": {"text/plain"}}, `hello`, false},
		{"teams: a card", teamsWorkflowCard, jsonHeader,
			card("1.4", `{"type":"TextBlock","text":"t"},{"type":"FactSet","facts":[{"title":"a","value":"b"}]}`), true},
		{"teams: version 1.6", teamsWorkflowCard, jsonHeader, card("1.6", `{"type":"TextBlock","text":"t"}`), false},
		{"teams: a fact without value", teamsWorkflowCard, jsonHeader,
			card("1.4", `{"type":"FactSet","facts":[{"title":"a"}]}`), false},
		{"teams: a bare card", teamsWorkflowCard, jsonHeader, `{"type":"AdaptiveCard","version":"1.4","body":[]}`, false},
		{"discord: an embed", discordWebhook, jsonHeader,
			`{"username":"bot","embeds":[{"title":"t","color":3066993,"timestamp":"2026-12-01T09:00:00Z",` +
				`"fields":[{"name":"n","value":"v"}]}]}`, true},
		{"discord: empty", discordWebhook, jsonHeader, `{"username":"bot"}`, false},
		{"discord: a username with discord", discordWebhook, jsonHeader, `{"username":"Discord bot","content":"x"}`, false},
		{"discord: a color as a string", discordWebhook, jsonHeader, `{"embeds":[{"title":"t","color":"#ff0000"}]}`, false},
		{"discord: content over 2000", discordWebhook, jsonHeader, `{"content":"` + strings.Repeat("x", 2001) + `"}`, false},
		{"github: a dispatch", githubRepositoryDispatch, github, `{"event_type":"e","client_payload":{"a":1}}`, true},
		{"github: no token", githubRepositoryDispatch, jsonHeader, `{"event_type":"e"}`, false},
		{"github: event_type over 100", githubRepositoryDispatch, github,
			`{"event_type":"` + strings.Repeat("e", 101) + `"}`, false},
		{"github: 11 payload properties", githubRepositoryDispatch, github,
			`{"event_type":"e","client_payload":{"a":1,"b":1,"c":1,"d":1,"e":1,"f":1,"g":1,"h":1,"i":1,"j":1,"k":1}}`, false},
	}
	for _, tc := range cases {
		err := tc.check(tc.header, []byte(tc.body))
		if (err == nil) != tc.ok {
			t.Errorf("%s: err = %v, want ok = %v", tc.name, err, tc.ok)
		}
	}
}
