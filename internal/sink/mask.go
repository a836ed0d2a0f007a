package sink

import (
	"net/url"
	"strings"
)

// Masked stands in for a credential in a URL.
const Masked = "***"

// sensitiveSuffixes are the query parameter names whose values MaskURL hides: a name is
// sensitive when, in lower case and without '-', '_' and '.', it is or ends with one of
// these. So token, access_token, refresh-token, key, apikey, api_key, X-Api-Key, sig,
// signature, X-Amz-Signature, secret, client_secret, password, passwd, pwd, auth, oauth,
// credential and X-Amz-Credential are all masked.
var sensitiveSuffixes = []string{"token", "key", "secret", "password", "passwd", "pwd", "sig", "signature",
	"auth", "credential", "credentials"}

// sensitiveParam tells whether a query parameter's value is masked (see sensitiveSuffixes).
func sensitiveParam(name string) bool {
	if un, err := url.QueryUnescape(name); err == nil {
		name = un
	}
	name = strings.Map(func(r rune) rune {
		switch r {
		case '-', '_', '.':
			return -1
		}
		if 'A' <= r && r <= 'Z' {
			return r + 'a' - 'A'
		}
		return r
	}, name)
	for _, s := range sensitiveSuffixes {
		if strings.HasSuffix(name, s) {
			return true
		}
	}
	return false
}

// MaskURL hides the credentials of a URL and keeps the rest as written, so a message still
// says where a request went: the password of the user information (a user name alone,
// often a token, is hidden whole), and the values of sensitive query and fragment
// parameters (see sensitiveSuffixes). https://user:pass@host/x?token=abc&v=1 becomes
// https://user:***@host/x?token=***&v=1. It works on the text, so a URL that does not
// parse is masked too; user information is what precedes the last '@' before the first
// '/', '?' or '#' after "://", as url.Parse reads it.
func MaskURL(raw string) string {
	if !strings.ContainsAny(raw, "@?#") {
		return raw // nothing that can hold a credential: no copy
	}
	var b strings.Builder
	b.Grow(len(raw))
	rest := raw
	if i := strings.Index(rest, "://"); i >= 0 {
		b.WriteString(rest[:i+3])
		rest = rest[i+3:]
		end := strings.IndexAny(rest, "/?#")
		if end < 0 {
			end = len(rest)
		}
		if at := strings.LastIndexByte(rest[:end], '@'); at >= 0 {
			if colon := strings.IndexByte(rest[:at], ':'); colon >= 0 {
				b.WriteString(rest[:colon+1])
			}
			b.WriteString(Masked)
			rest = rest[at:]
		}
	}
	q := strings.IndexAny(rest, "?#")
	if q < 0 {
		b.WriteString(rest)
		return b.String()
	}
	b.WriteString(rest[:q])
	rest = rest[q:]
	// rest is "?query#fragment", "?query" or "#fragment": parameters in both are masked
	// (OAuth sends tokens in the fragment).
	for rest != "" {
		b.WriteByte(rest[0]) // '?', '#', '&' or ';'
		rest = rest[1:]
		end := strings.IndexAny(rest, "&;#")
		if end < 0 {
			end = len(rest)
		}
		param := rest[:end]
		if name, value, ok := strings.Cut(param, "="); ok && value != "" && sensitiveParam(name) {
			b.WriteString(name)
			b.WriteByte('=')
			b.WriteString(Masked)
		} else {
			b.WriteString(param)
		}
		rest = rest[end:]
	}
	return b.String()
}

// MaskURLsIn masks (as MaskURL does) every URL in a text such as an error message. A URL
// starts at its scheme and ends at white space or a control character, before the next
// URL's scheme, or, when it follows a double quote (Go's %q, as in url.Error), at the
// closing quote; a ':' ending it is left out, as in "POST <url>: <error>". Other
// punctuation is taken as part of the URL, since a host may hold it: a masked value runs
// to the URL's end.
func MaskURLsIn(text string) string {
	if !strings.Contains(text, "://") {
		return text
	}
	var b strings.Builder
	b.Grow(len(text))
	pos := 0
	for {
		i := strings.Index(text[pos:], "://")
		if i < 0 {
			break
		}
		sep := pos + i
		start := sep
		for start > pos && isSchemeChar(text[start-1]) {
			start--
		}
		end := urlEnd(text, start, sep)
		if end > sep+3 && text[end-1] == ':' && (end == len(text) || text[end] == ' ') {
			end--
		}
		b.WriteString(text[pos:start])
		b.WriteString(MaskURL(text[start:end]))
		pos = end
	}
	b.WriteString(text[pos:])
	return b.String()
}

// urlEnd is where the URL whose scheme starts at start (its "://" at sep) ends in text.
func urlEnd(text string, start, sep int) int {
	quoted := start > 0 && text[start-1] == '"'
	for j := sep + 3; j < len(text); j++ {
		c := text[j]
		switch {
		case c <= ' ' || c == 0x7f:
			return j
		case quoted && c == '\\' && j+1 < len(text):
			j++ // an escape of %q: \" or \\ belong to the URL
		case quoted && c == '"':
			return j
		case c == ':' && strings.HasPrefix(text[j:], "://"):
			// Another URL (in a query parameter, or right after this one): it starts at its
			// own scheme, masked on its own.
			k := j
			for k > sep+3 && isSchemeChar(text[k-1]) {
				k--
			}
			return k
		}
	}
	return len(text)
}

func isSchemeChar(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '+' || c == '-' || c == '.'
}
