package server

import (
	"net/http"
	"net/url"
	"strings"
)

// queryOf parses the request's query string the way Django's QueryDict does: '+' is
// a space, valid %XX escapes are decoded and anything else is taken literally. The
// frontend pastes the search box's text into the URL unencoded, so "50%" or "a&b"
// arrive as typed and must never be refused (an error logs the user out), where
// url.ParseQuery would drop the pair.
func queryOf(r *http.Request) url.Values {
	out := url.Values{}
	for pair := range strings.SplitSeq(r.URL.RawQuery, "&") {
		if pair == "" {
			continue
		}
		k, v, _ := strings.Cut(pair, "=")
		out.Add(unescapeLenient(k), unescapeLenient(v))
	}
	return out
}

// unescapeLenient decodes s as Python's urllib.parse.unquote_plus does: a '%' not
// followed by two hex digits stays as it is.
func unescapeLenient(s string) string {
	if !strings.ContainsAny(s, "%+") {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '+':
			b.WriteByte(' ')
		case c == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]):
			b.WriteByte(unhex(s[i+1])<<4 | unhex(s[i+2]))
			i += 2
		default:
			b.WriteByte(c)
		}
	}
	return strings.ToValidUTF8(b.String(), "\uFFFD")
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}
