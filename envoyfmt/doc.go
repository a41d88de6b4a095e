// Package envoyfmt is the syntax of Envoy's access-log format strings as
// vmesh takes them: the command operators its proxy writes (Operators),
// where one ends (OperatorEnd), and a syntax check (Check). It is a leaf:
// the config-entry validator in discovery checks a proxy-defaults
// AccessLogs format with it before the entry is written, and the proxy
// compiles the same format with it when xDS delivers it, so the two never
// disagree on what a format means. It imports nothing of vmesh and
// renders nothing: rendering a line is the proxy's.
package envoyfmt
