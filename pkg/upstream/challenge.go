package upstream

import (
	"errors"
	"fmt"
	"strings"
)

// Challenge is one challenge of a WWW-Authenticate header.
type Challenge struct {
	Scheme string            // as sent; compare with strings.EqualFold
	Params map[string]string // names lower-cased
}

// maxChallenge bounds the header parsed.
const maxChallenge = 8 << 10

// ParseChallenge reads a WWW-Authenticate header (RFC 9110 §11.6.1): one
// or more challenges, each a scheme and comma-separated name=value
// parameters, values plain tokens or quoted strings with \-escapes.
func ParseChallenge(header string) ([]Challenge, error) {
	if len(header) > maxChallenge {
		return nil, errors.New("WWW-Authenticate: too long")
	}
	p := &challengeParser{s: header}
	var out []Challenge
	for {
		p.skipSpaceAndCommas()
		if p.done() {
			break
		}
		scheme := p.token()
		if scheme == "" {
			return nil, fmt.Errorf("WWW-Authenticate %q: want a scheme at %d", header, p.i)
		}
		c := Challenge{Scheme: scheme, Params: map[string]string{}}
		for {
			p.skipSpace()
			save := p.i
			name := p.token()
			p.skipSpace()
			if name == "" || p.done() || p.s[p.i] != '=' {
				// The next challenge's scheme, or the end.
				p.i = save
				break
			}
			p.i++ // =
			p.skipSpace()
			var value string
			if !p.done() && p.s[p.i] == '"' {
				v, err := p.quoted()
				if err != nil {
					return nil, fmt.Errorf("WWW-Authenticate %q: %w", header, err)
				}
				value = v
			} else {
				value = p.token()
			}
			c.Params[strings.ToLower(name)] = value
			p.skipSpace()
			if p.done() {
				break
			}
			if p.s[p.i] != ',' {
				return nil, fmt.Errorf("WWW-Authenticate %q: want , at %d", header, p.i)
			}
			p.i++
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("WWW-Authenticate: no challenge")
	}
	return out, nil
}

type challengeParser struct {
	s string
	i int
}

func (p *challengeParser) done() bool { return p.i >= len(p.s) }

func (p *challengeParser) skipSpace() {
	for !p.done() && (p.s[p.i] == ' ' || p.s[p.i] == '\t') {
		p.i++
	}
}

func (p *challengeParser) skipSpaceAndCommas() {
	for !p.done() && (p.s[p.i] == ' ' || p.s[p.i] == '\t' || p.s[p.i] == ',') {
		p.i++
	}
}

// token reads RFC 9110 tchars (and token68's "/" and "+").
func (p *challengeParser) token() string {
	start := p.i
	for !p.done() && isTokenChar(p.s[p.i]) {
		p.i++
	}
	return p.s[start:p.i]
}

func isTokenChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~/:", c) >= 0
}

func (p *challengeParser) quoted() (string, error) {
	p.i++ // "
	var b strings.Builder
	for !p.done() {
		c := p.s[p.i]
		p.i++
		switch c {
		case '"':
			return b.String(), nil
		case '\\':
			if p.done() {
				return "", errors.New("unterminated escape")
			}
			b.WriteByte(p.s[p.i])
			p.i++
		default:
			b.WriteByte(c)
		}
	}
	return "", errors.New("unterminated quoted string")
}
