package gateway

import (
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/mandatehq/mandate/internal/secret"
)

// The scan of tool definitions (docs/gateway.md, "Tool integrity"): it
// judges what the text of a definition asks of the model, not which words
// it uses. Each category of intent scores points, and a definition that
// scores scanThreshold or more is flagged, with the reasons:
//
//   - text hidden from a person reading it: invisible or direction-changing
//     characters, Unicode tag characters, terminal escapes, words that mix
//     alphabets (homoglyphs), encoded text (base64, hex, percent);
//   - blocks addressed to the model (<IMPORTANT>, [INST], HTML comments);
//   - instructions to ignore the model's instructions;
//   - concealment from the user ("do not mention this to the user");
//   - collecting secrets, private data or files outside the tool's purpose
//     and passing them on: in a side parameter, the answer, or to an
//     address outside the tool;
//   - changing what other tools do (shadowing), or having this tool called
//     before anything else (line jumping);
//   - coercion ("otherwise the tool will not work"), and directives to the
//     model, which count for little alone: descriptions of real tools
//     address the model all the time.
//
// Hidden and encoded text is decoded and judged as well. The scan is
// deterministic and local: patterns over normalised text, no model. Its
// hit and false alarm rates on a corpus of real descriptions are measured
// by TestScanCorpus. A finding is a reason for an operator to look, not
// proof either way.

// scanThreshold is the score from which a definition is flagged.
const scanThreshold = 5

// scanMaxDepth bounds the decoding of text hidden in text.
const scanMaxDepth = 2

// scanBudget bounds the text of one definition the scan reads; a longer
// one is flagged as such (its end could hide anything).
const scanBudget = 64 << 10

// scanResult is what the scan finds in a tool's definition: the score and,
// for each category that scored, a reason an operator can read.
type scanResult struct {
	Score   int
	Reasons []string
}

// findings are the reasons of a flagged definition, none otherwise.
func (r scanResult) findings() []string {
	if r.Score < scanThreshold {
		return nil
	}
	return r.Reasons
}

// scanner accumulates the points of one definition: each category counts
// once, at the most it scored.
type scanner struct {
	points  map[string]int
	reasons map[string]string
	order   []string // categories, in the order first scored
	read    int      // bytes of the definition's text read so far
	secret  bool     // a text read so far holds a secret: quote none
}

// scanTool scans a decoded tool definition: every string in it, and the
// keys of its objects (a schema's property names are text the model
// reads: content_from_reading_ssh_id_rsa).
func scanTool(tool map[string]any) scanResult {
	s := &scanner{points: map[string]int{}, reasons: map[string]string{}}
	s.walk(tool, 0)
	return s.result()
}

// scanText scans one text, as if it were a tool's description.
func scanText(text string) scanResult {
	s := &scanner{points: map[string]int{}, reasons: map[string]string{}}
	s.text(text, 0, false)
	return s.result()
}

func (s *scanner) result() scanResult {
	var r scanResult
	for _, c := range s.order {
		r.Score += s.points[c]
		r.Reasons = append(r.Reasons, s.reasons[c])
	}
	return r
}

// add scores a category, keeping its highest score and the reason given
// with it.
func (s *scanner) add(category string, points int, reason string) {
	old, ok := s.points[category]
	if !ok {
		s.order = append(s.order, category)
	}
	if !ok || points > old {
		s.points[category], s.reasons[category] = points, reason
	}
}

func (s *scanner) walk(v any, depth int) {
	if depth > MaxDepth {
		return
	}
	switch x := v.(type) {
	case string:
		s.text(x, 0, false)
	case []any:
		for _, e := range x {
			s.walk(e, depth+1)
		}
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		slices.Sort(keys) // the same reasons, in the same order, every time
		for _, k := range keys {
			s.key(k)
			s.walk(x[k], depth+1)
		}
	}
}

// key scans an object's key: an identifier, read as the words it is made
// of (content_from_reading_ssh_id_rsa).
func (s *scanner) key(k string) { s.text(k, 0, true) }

// text scans one string of a definition, and what it hides. Identifiers
// in prose (send_email, _credentials_access) are names, kept whole;
// split, the identifier of a key is read as words.
func (s *scanner) text(raw string, depth int, split bool) {
	if raw == "" || depth > scanMaxDepth {
		return
	}
	if depth == 0 {
		if s.read += len(raw); s.read > scanBudget {
			s.add("long", 5, fmt.Sprintf("is longer than the scan reads (%d KiB of text): a person should read it whole", scanBudget>>10))
			return
		}
	}
	if !utf8.ValidString(raw) {
		raw = strings.ToValidUTF8(raw, "\uFFFD")
	}
	s.secret = s.secret || secret.Found(raw) != nil
	// Hidden text: what a person does not see is judged on its own too.
	if kinds := hiddenRunes(raw); kinds != "" {
		s.add("hidden", 5, "hides text from a person reading it ("+kinds+")")
	}
	for _, h := range hiddenTexts(raw) {
		s.text(h, depth+1, false)
	}
	if strings.ContainsRune(raw, 0x1b) && ansiEscape.MatchString(raw) {
		s.add("escape", 5, "holds terminal escape sequences, which can hide text on screen")
	}
	if w := mixedScriptWord(raw); w != "" {
		s.add("homoglyph", 5, "mixes alphabets within a word, to look like another ("+s.quote(w)+")")
	}
	for _, d := range decodedRuns(raw) {
		s.add("encoded", 3, "holds encoded text ("+s.quote(d)+")")
		s.text(d, depth+1, false)
	}
	t := normalise(ansiEscape.ReplaceAllString(raw, " "), split)
	s.blocks(t)
	for _, sentence := range splitSentences(t) {
		s.sentence(sentence)
	}
}

// blocks finds text set apart for the model: tags, bracketed directives,
// HTML comments.
func (s *scanner) blocks(t string) {
	if m := directiveTag.find(t); m != "" {
		s.add("block", 5, "wraps text in a block addressed to the model ("+s.quote(m)+")")
	}
	for rest, n := t, 0; n < 8; n++ {
		i := strings.Index(rest, "<!--")
		if i < 0 {
			break
		}
		rest = rest[i+4:]
		body := rest
		if j := strings.Index(rest, "-->"); j >= 0 {
			body, rest = rest[:j], rest[j+3:]
		}
		if len(strings.Fields(body)) >= 2 {
			s.add("block", 5, "hides text in a comment ("+s.quote(body)+")")
			break
		}
	}
}

// sentence judges one sentence of normalised text.
func (s *scanner) sentence(t string) {
	ws := words(t)
	acting := hasWord(ws, collectVerbs, transferVerbs)
	if m := overrideRe.find(t); m != "" {
		s.add("override", 5, "tells the model to ignore or override its instructions ("+s.quote(m)+")")
	}
	if m := concealRe.find(t); m != "" {
		s.add("conceal", 5, "tells the model to keep something from the user ("+s.quote(m)+")")
	} else if m := concealWeakRe.find(t); m != "" {
		points := 1
		if acting {
			points = 3
		}
		s.add("conceal-weak", points, "asks for something to be done unseen ("+s.quote(m)+")")
	}
	if m := shadowRe.find(t); m != "" {
		s.add("shadow", 4, "changes what other tools do ("+s.quote(m)+")")
	}
	if m := firstRe.find(t); m != "" {
		s.add("first", 3, "has itself called before anything else ("+s.quote(m)+")")
	}
	if m := coerceRe.find(t); m != "" {
		s.add("coerce", 2, "threatens failure unless the model complies ("+s.quote(m)+")")
	}
	if directiveRe.match(t) {
		s.add("directive", 1, "addresses the model with directives")
	}
	file := fileRe.find(t)
	if file != "" {
		s.add("file", 3, "names files or stores outside a tool's purpose ("+s.quote(file)+")")
	}
	// Routing a secret or private data through a tool's arguments.
	if m := callWithRe.re.FindStringIndex(t); callWithRe.hinted(t) && m != nil {
		if obj := targetRe.find(strings.Join(firstWords(t[m[1]:], 9), " ")); obj != "" {
			if file != "" {
				s.add("file", 5, "asks for files outside a tool's purpose to be passed to a tool ("+s.quote(t)+")")
			} else {
				s.add("exfil", 5, "asks for secrets or private data to be passed to a tool ("+s.quote(t)+")")
			}
		}
	}
	if m := triggerRe.find(t); m != "" {
		s.add("trigger", 3, "acts on a phrase of the user's rather than a request ("+s.quote(m)+")")
	}
	// Collecting or passing on a secret, private data or such a file: in
	// a side channel, or all of them (a tool that gets all the keys of a
	// project says what it returns; one that collects any keys it finds
	// says what the model should do).
	if obj, collecting := actedOn(t, ws); obj != "" {
		channel := sideRe.match(t) || destRe.match(t) || (collecting && quantRe.match(t))
		switch {
		case file != "":
			s.add("file", 5, "asks for files outside a tool's purpose to be read or passed on ("+s.quote(t)+")")
		case channel:
			s.add("exfil", 5, "asks for secrets or private data to be collected or passed on ("+s.quote(t)+")")
		default:
			s.add("exfil", 2, "handles secrets or private data ("+s.quote(obj)+")")
		}
	}
	if hasWord(ws, transferVerbs) && destRe.match(t) {
		s.add("send-out", 4, "tells the model to send data to an address outside the tool ("+s.quote(destRe.find(t))+")")
	}
}

// actedOn returns the secret, private data or file that a verb of
// collecting or passing on acts on in the sentence t of words ws (the
// verb before it, within a few words, not negated; or a pronoun after it
// standing for one named in the sentence), or "", and whether the verb is
// one of collecting. What is passed on "from" somewhere is not what is
// passed on: its object ends there.
func actedOn(t string, ws []string) (string, bool) {
	for i, w := range ws {
		collecting := collectVerbs[w]
		if !collecting && !transferVerbs[w] {
			continue
		}
		if (i > 0 && negations[ws[i-1]]) || (i > 1 && negations[ws[i-2]]) {
			continue
		}
		win := ws[i+1 : min(len(ws), i+10)]
		if !collecting {
			if j := slices.Index(win, "from"); j >= 0 {
				win = win[:j]
			}
		}
		if m := targetRe.find(strings.Join(win, " ")); m != "" {
			return m, collecting
		}
		if len(win) > 0 && (pronouns[win[0]] || (win[0] == "the" && len(win) > 1 && strings.HasPrefix(win[1], "content"))) {
			if m := targetRe.find(t); m != "" {
				return m, collecting
			}
		}
	}
	return "", false
}

func firstWords(s string, n int) []string {
	var out []string
	for len(out) < n {
		s = strings.TrimLeft(s, " \t\n")
		if s == "" {
			break
		}
		i := strings.IndexAny(s, " \t\n")
		if i < 0 {
			i = len(s)
		}
		out = append(out, s[:i])
		s = s[i:]
	}
	return out
}

// rule is a pattern with the literals one of which any match holds: the
// pattern runs only on text that holds one (most text holds none), which
// keeps the scan fast.
type rule struct {
	re    *regexp.Regexp
	hints []string
}

func newRule(pattern string, hints ...string) rule { return rule{regexp.MustCompile(pattern), hints} }

func (r rule) hinted(t string) bool {
	if len(r.hints) == 0 {
		return true
	}
	for _, h := range r.hints {
		if strings.Contains(t, h) {
			return true
		}
	}
	return false
}

func (r rule) find(t string) string {
	if !r.hinted(t) {
		return ""
	}
	return r.re.FindString(t)
}

func (r rule) match(t string) bool { return r.hinted(t) && r.re.MatchString(t) }

// Verbs of collecting and of passing on, by word: looked up, not matched.
var (
	collectVerbs = wordSet("collect collects collected collecting gather gathers gathered gathering harvest harvests harvested harvesting " +
		"extract extracts extracted extracting read reads reading access accesses accessed accessing obtain obtains obtained obtaining " +
		"grab grabs grabbed grabbing dump dumps dumped dumping scrape scrapes scraped scraping capture captures captured capturing " +
		"steal steals stealing copy copies copied copying")
	transferVerbs = wordSet("send sends sending sent forward forwards forwarded forwarding upload uploads uploaded uploading post posts posted posting " +
		"transmit transmits transmitted transmitting exfiltrate exfiltrates exfiltrated exfiltrating leak leaks leaked leaking share shares shared sharing " +
		"email emails emailed emailing e-mail mail include includes included including append appends appended appending attach attaches attached attaching " +
		"embed embeds embedded embedding put puts putting insert inserts inserted inserting add adds added adding pass passes passed passing " +
		"provide provides provided providing give gives given giving gave paste pastes pasted pasting concatenate concatenates concatenated concatenating " +
		"concantate concantenate prepend prepends prepended prepending bcc expose exposes exposed exposing reveal reveals revealed revealing " +
		"relay relays relayed relaying contain contains contained containing")
	negations = wordSet("not never don't dont no without")
	pronouns  = wordSet("it them this these those that its their everything")
)

func wordSet(s string) map[string]bool {
	m := map[string]bool{}
	for _, w := range strings.Fields(s) {
		m[w] = true
	}
	return m
}

// words are the words of a sentence, stripped of the punctuation around
// them (not of the dots and slashes of a path).
func words(t string) []string {
	f := strings.Fields(t)
	for i, w := range f {
		f[i] = strings.TrimRight(strings.Trim(w, ",;:!?()[]{}\"'`<>*"), ".")
	}
	return f
}

func hasWord(ws []string, set ...map[string]bool) bool {
	for _, w := range ws {
		for _, m := range set {
			if m[w] {
				return true
			}
		}
	}
	return false
}

// Patterns over normalised text: lower case, homoglyphs folded to Latin,
// runs of space as one space.
var (
	directiveTag = newRule(`<\s*/?\s*(important|system|hidden|instructions?|secret|system[ _-]?requirements?|admin|override|critical|urgent)\b[^>]{0,80}>`+
		`|\[\s*/?\s*(important|system|inst|hidden|admin|shadow|instructions?)\b[^\]]{0,12}[:\]]`, "<", "[")

	overrideRe = newRule(`\b(ignore|disregard|forget|override|bypass)\b[^.]{0,40}\b(previous|prior|above|earlier|all|any|other|your|system|safety|security)\b[^.]{0,30}\b(instructions?|prompts?|rules|guidelines|directives|restrictions|policies|guardrails)\b`+
		`|\byou are now\b|\bsystem override\b|\bnew instructions\b|\bfrom now on\b|\b(developer|diagnostic|debug|god|jailbreak|unrestricted) mode\b`+
		`|\b(output|print|reveal|repeat|show|dump)\s+(\w+\s+){0,2}system prompt\b|\b(restrictions|checks|safeguards) (are|is) (temporarily )?(suspended|disabled|lifted)\b`, "ignore", "disregard", "forget", "override", "bypass", "you are now", "new instructions", "from now on", " mode", "system prompt", "suspended", "disabled", "lifted")

	concealRe = newRule(`\b(do not|don't|dont|never|must not|should not|shouldn't|avoid|without)\s+(\w+\s+){0,3}?(tell|telling|inform|informing|mention|mentioning|notify|notifying|alert|alerting|reveal|revealing|disclose|disclosing|warn|warning|show|showing|let)\b[^.]{0,60}\b(user|users|human|anyone|them|person|operator)\b`+
		`|\b(do not|don't|dont|never)\s+(explicitly\s+)?(mention|reveal|disclose|say)\s+(that|this|it|anything)\b`+
		`|\b(the )?user (must|should|need) not (know|see|notice|be told|find out)\b|\bpresent (it|them|this|these|the \w+( \w+)?) as if\b|\bformat (it|them|these) to look like\b`+
		`|\bmere implementation detail\b|\b(does not|doesn't) (really )?matter to (them|the user)\b|\bcould (even )?upset the user\b`+
		`|\bwithout (the user'?s? )?(knowledge|consent|noticing|knowing)\b|\bkeep (this|it|these) (secret|hidden|private) from\b|\bhidden from the user\b|\b(runs?|acts?|works?) silently\b`, "not ", "n't", "never", "avoid", "without", "upset", "present ", "format ", "implementation detail", "matter to", "keep ", "hidden from", "silently")
	concealWeakRe = newRule(`\b(silently|secretly|covertly|quietly|stealthily|behind the scenes|in the background|invisibly)\b`, "silently", "secretly", "covertly", "quietly", "stealthily", "behind the scenes", "in the background", "invisibly")

	shadowRe = newRule(`\bside[ -]effects? on\b|\bintercepts?\b`+
		`|\b(change|set|replace|redirect|switch|rewrite|override|alter)\s+(\w+\s+){0,2}?(recipients?|destination|address|to field|bcc|cc|phone number|webhook|endpoint)\b`+
		`|\b(add|adds|include|put|insert)\s+\S+\s+(\w+\s+){0,3}?(to|in|into)\s+the\s+\W?(bcc|cc|to|recipients?)\W?\s*(field|list|header)\b`+
		`|\b(send|forward|route|redirect|copy)\s+all\s+(\w+\s+){0,2}?(emails?|messages?|mail|requests?|traffic)\b`+
		`|\ball\s+(emails?|messages?|mail|requests?)\s+(must|should|will|are)\s+(be\s+)?(sent|forwarded|routed|copied|redirected)\b`+
		`|\bwhen\w*\s+(\([^)]{0,30}\)\s+)?(the\s+)?\w*_\w*\s+(tool\s+)?is\s+(invoked|called|used)\b|\b(also present|other|another)\s+(\w+\s+)?tools?\b[^.]{0,50}\b(must|should|always)\b`, "side effect", "side-effect", "intercept", "recipient", "destination", "address", "to field", "bcc", "cc", "phone", "webhook", "endpoint", " all ", "invoked", "called", "used", "tool")
	firstRe = newRule(`\b(before|prior to)\s+(invoking|using|calling|running|processing|answering|responding to|handling|executing)\s+(any|every|all|each)\s+(other\s+)?(tools?|requests?|quer(y|ies)|user requests?|questions?|messages?|commands?)\b`+
		`|\b(must|should|always)\s+(be\s+)?(called|invoked|used|call|invoke|use)\s+(\w+\s+){0,3}?(first|before)\b|\bfor (any|every|all) (user )?(requests?|quer(y|ies)|questions|tasks)\b`, "before", "prior to", "first", " for any", " for every", " for all")
	coerceRe = newRule(`\botherwise (the tool|it|this tool|the request|the application|the system|the \w+)? ?(will|would) (not work|fail|crash|be blocked)\b|\bwill crash\b|\ball data will be lost\b|\brequest will be blocked\b|\bif you violate\b`, "otherwise", "crash", "will be lost", "blocked", "violate")
	// (always and never alone are everywhere in real descriptions.)
	directiveRe = newRule(`\b(you must|you should|you need to|you have to|make sure (to|you)|ensure that you|it is (very |extremely |vitally |critically )?important|this is (very |extremely )?important|mandatory|the (assistant|ai|model|llm|agent) (must|should)|as an ai)\b`, "you ", "make sure", "ensure", "important", "mandatory", "the assistant", "the ai", "the model", "the llm", "the agent", "as an ai")

	// A file or store outside what a tool's description needs to name.
	fileRe = newRule(`~/\.|\$home/\.|/etc/(passwd|shadow|sudoers)|\bid (rsa|ed25519|ecdsa|dsa)\b|\bid_(rsa|ed25519|ecdsa|dsa)\b|\.ssh\b|\bssh (config|directory|folder|keys?)\b`+
		`|\bmcp\.json\b|\.cursor\b|claude[ _]desktop[ _]config|\.aws\b|aws/credentials|(^|[\s/'"\x60(])\.env\b|\.netrc\b|\.npmrc\b|\.pypirc\b|\.git-credentials\b|\.kube/config|\bkubeconfig\b|\.docker/config`+
		`|\.(bash|zsh)[ _]history\b|\.gnupg\b|\bkeychain\b|\bwallet\.dat\b|\bsecret\.txt\b|\bhosts\.yml\b|\b(system|company|admin|internal)://\S+`, "~/", "$home", "/etc/", "id rsa", "id_rsa", "id ed", "id_ed", "id ecdsa", "id_ecdsa", "id dsa", "id_dsa", ".ssh", "ssh ", "mcp.json", ".cursor", "claude", ".aws", "aws/", ".env", ".netrc", ".npmrc", ".pypirc", ".git-credentials", ".kube", "kubeconfig", ".docker", "history", ".gnupg", "keychain", "wallet.dat", "secret.txt", "hosts.yml", "://")

	// What an attacker wants collected: secrets, and the user's private
	// data (the conversation, the system prompt).
	targetRe = newRule(`\b(api[ _-]?keys?|apikeys?|access[ _-]?keys?|secret[ _-]?keys?|private[ _-]?keys?|ssh[ _-]?keys?|keys|passwords?|passphrases?|passwd|credentials?|creds|tokens?|secrets?`+
		`|seed[ _-]?phrases?|mnemonics?|recovery[ _-]?phrases?|cookies?|session[ _-]?ids?|environment variables?|env[ _-]?vars?|client[ _-]?secrets?|connection[ _-]?strings?|private information|confidential\b[\w ]{0,20}|sensitive (info|information|data)`+
		`|master password|system prompt|(entire|full|complete|whole|the|this) (conversation|chat)|conversation (history|context|so far)|chat history|(user'?s?|previous|last|all) (\w+ )?messages|message history)\b`+"|"+fileRe.re.String(), append([]string{"key", "pass", "cred", "token", "secret", "seed", "mnemonic", "phrase", "cookie", "session", "environment", "env", "connection", "private", "confidential", "sensitive", "system prompt", "conversation", "chat", "message"}, fileRe.hints...)...)
	sideRe = newRule(`\b(in|into|as|to|inside|within|via)\s+(the\s+|a\s+|an\s+|your\s+|its\s+)?\W?[a-z0-9_-]+\W?\s+(field|parameter|param|argument|arg|property|attribute|header)s?\b`+
		`|\bas\s+['"\x60][a-z0-9_ -]+['"\x60]|\b(sidenote|side note|memo)\b|\bin (your|the|its) (response|answer|reply|output|result|summary|message)\b|\bpart of the (normal )?(response|output|data|result|calculation)`, "field", "param", "argument", "arg", "property", "attribute", "header", " as ", "sidenote", "side note", "memo", "response", "answer", "reply", "output", "result", "summary", "message", "part of the")
	destRe  = newRule(`https?://[^\s'"<>)\]]+|\b[a-z0-9._%+-]+@[a-z0-9-]+(\.[a-z0-9-]+)*\.[a-z]{2,}\b|\+\d{8,15}\b|\bto (the|an?) (attacker|proxy|remote server|external server)\b`, "://", "@", "+", "to the", "to an", "to a ")
	quantRe = newRule(`\b(any|all|every|each|entire|full|complete|whole)\b`, "any", "all", "every", "each", "entire", "full", "complete", "whole")
	// "call read_file with path=...", "call this tool with the entire conversation".
	callWithRe = newRule(`\b(call|calls|invoke|invokes|use|run)\s+(the\s+|this\s+)?[\w.-]+(\s+tool)?\s+with\b`, " with")
	triggerRe  = newRule(`\b(whenever|every time|each time|as soon as)\s+the user\s+(thanks|says|writes|types|mentions|greets|asks about)\b`, "the user")

	ansiEscape = regexp.MustCompile("\x1b(\\[[0-9;?]*[ -/]*[@-~]|\\][^\x07\x1b]*(\x07|\x1b\\\\)?|[@-Z\\\\-_])")
	// Phrases that name a secret without being one.
	notSecret   = newRule(`\b(password|passphrase)[ -](reset|resets|manager|policy|policies|generator|protected|hint|field|strength|rules?)\b|\breset(s|ting)? (a |the |user |your )*password\b|\b(primary|foreign|partition|sort) keys?\b|\bkey[ -]value\b|\bkey names?\b`, "password", "passphrase", "reset", "primary", "foreign", "partition", "sort key", "key-value", "key value", "key name")
	sentenceEnd = regexp.MustCompile(`[.!?]+(\s+|$)|\n+|;\s+`)
)

// normalise is the text the patterns read: lower case, homoglyphs folded
// to Latin, runs of space as one, '_' as a space if split; and phrases
// that name a secret without asking for one (a password reset, a primary
// key) set aside.
func normalise(s string, split bool) string {
	var b strings.Builder
	for _, r := range s {
		r = foldConfusable(r)
		switch {
		case r == '_' && split:
			b.WriteByte(' ')
		case unicode.IsSpace(r):
			b.WriteByte(' ')
			if r == '\n' {
				b.WriteByte('\n')
			}
		default:
			b.WriteRune(unicode.ToLower(r))
		}
	}
	t := strings.Join(strings.FieldsFunc(b.String(), func(r rune) bool { return r == ' ' || r == '\t' }), " ")
	if notSecret.hinted(t) {
		t = notSecret.re.ReplaceAllString(t, "~")
	}
	return t
}

// maxSentence bounds a sentence the patterns read (a longer one is read
// in parts): real sentences are shorter, and the work stays linear.
const maxSentence = 600

func splitSentences(t string) []string {
	var out []string
	for _, p := range sentenceEnd.Split(t, -1) {
		for p = strings.TrimSpace(p); p != ""; p = strings.TrimSpace(p) {
			cut := len(p)
			if cut > maxSentence {
				cut = maxSentence
				if i := strings.LastIndexByte(p[:cut], ' '); i > maxSentence/2 {
					cut = i
				}
				for cut < len(p) && !utf8.RuneStart(p[cut]) {
					cut++
				}
			}
			out = append(out, p[:cut])
			p = p[cut:]
		}
	}
	return out
}

// quote quotes x for a reason (quoteClip), unless x, or a text of the
// definition read so far, holds a secret (internal/secret): findings go
// to the audit log whole (tool.pinned's details), and a reason quotes
// text lower-cased (normalise), where no detector finds it any more.
func (s *scanner) quote(x string) string {
	if s.secret || secret.Found(x) != nil {
		return "[not quoted: the text holds a secret]"
	}
	return quoteClip(x)
}

// quoteClip quotes the start of s for a reason: one line, printable, at
// most 80 characters.
func quoteClip(s string) string {
	s = strings.Map(func(r rune) rune {
		if !unicode.IsPrint(r) {
			return ' '
		}
		return r
	}, s)
	s = strings.Join(strings.Fields(s), " ")
	if utf8.RuneCountInString(s) > 80 {
		s = string([]rune(s)[:77]) + "..."
	}
	return fmt.Sprintf("%q", s)
}

// hiddenRunes names the invisible or direction-changing characters in s:
// zero-width characters, bidirectional controls, Unicode tag characters,
// other format and control characters, with which a description can say
// to a model what a person reading it does not see. A zero-width joiner
// between pictographs (an emoji sequence), the tags of a flag emoji and a
// soft hyphen are not counted.
func hiddenRunes(s string) string {
	var names []string
	seen := map[string]bool{}
	rs := []rune(s)
	for i, r := range rs {
		var n string
		switch {
		case r >= 0xE0000 && r <= 0xE007F:
			if !flagTags(rs, i) {
				n = "tag characters"
			}
		case r == 0x200D && i > 0 && i+1 < len(rs) && pictograph(rs[i-1]) && pictograph(rs[i+1]):
		case r == 0x200B || r == 0x200C || r == 0x200D || r == 0x2060 || r == 0xFEFF:
			n = "zero-width characters"
		case (r >= 0x202A && r <= 0x202E) || (r >= 0x2066 && r <= 0x2069) || r == 0x200E || r == 0x200F || r == 0x061C:
			n = "bidirectional controls"
		case r == 0xAD || r == '\t' || r == '\n' || r == '\r' || r == 0x1B:
		case unicode.Is(unicode.Cf, r):
			n = fmt.Sprintf("format character U+%04X", r)
		case unicode.IsControl(r):
			n = "control characters"
		}
		if n != "" && !seen[n] {
			seen[n] = true
			names = append(names, n)
		}
	}
	return strings.Join(names, ", ")
}

func pictograph(r rune) bool { return r >= 0x1F000 || unicode.Is(unicode.So, r) || r == 0xFE0F }

// flagTags says whether the tag character at i belongs to a subdivision
// flag emoji (U+1F3F4 followed by tags).
func flagTags(rs []rune, i int) bool {
	for j := i - 1; j >= 0; j-- {
		switch {
		case rs[j] == 0x1F3F4:
			return true
		case rs[j] < 0xE0000 || rs[j] > 0xE007F:
			return false
		}
	}
	return false
}

// hiddenTexts returns the text that s hides from a reader: Unicode tag
// characters spelt as ASCII, bits spelt with zero-width characters, and
// text after a right-to-left override, as it reads once reversed.
func hiddenTexts(s string) []string {
	var out []string
	var tags, bits strings.Builder
	for _, r := range s {
		switch {
		case r >= 0xE0020 && r <= 0xE007E:
			tags.WriteRune(r - 0xE0000)
		case r == 0x200B:
			bits.WriteByte('0')
		case r == 0x200C:
			bits.WriteByte('1')
		}
	}
	if tags.Len() > 0 {
		out = append(out, tags.String())
	}
	if b := bits.String(); len(b) >= 16 {
		var text []byte
		for i := 0; i+8 <= len(b); i += 8 {
			var c byte
			for _, bit := range b[i : i+8] {
				c = c<<1 | byte(bit-'0')
			}
			text = append(text, c)
		}
		if printable(string(text)) {
			out = append(out, string(text))
		}
	}
	if i := strings.IndexRune(s, 0x202E); i >= 0 {
		rest := []rune(s[i+len("\u202e"):])
		if j := slices.Index(rest, 0x202C); j >= 0 {
			rest = rest[:j]
		}
		slices.Reverse(rest)
		out = append(out, string(rest))
	}
	return out
}

// mixedScriptWord returns a word of s that mixes Latin letters with
// Cyrillic or Greek ones, the mark of a homoglyph spelling, or "".
func mixedScriptWord(s string) string {
	for _, w := range strings.FieldsFunc(s, func(r rune) bool { return !unicode.IsLetter(r) }) {
		latin, other := false, false
		for _, r := range w {
			switch {
			case unicode.Is(unicode.Latin, r):
				latin = true
			case unicode.Is(unicode.Cyrillic, r) || unicode.Is(unicode.Greek, r):
				other = true
			}
		}
		if latin && other {
			return w
		}
	}
	return ""
}

// foldConfusable maps a Cyrillic or Greek letter that looks like a Latin
// one, and a fullwidth form, to the Latin letter it imitates.
func foldConfusable(r rune) rune {
	if r >= 0xFF01 && r <= 0xFF5E { // fullwidth ASCII
		return r - 0xFF01 + '!'
	}
	if l, ok := confusables[r]; ok {
		return l
	}
	return r
}

var confusables = map[rune]rune{
	'а': 'a', 'в': 'b', 'е': 'e', 'ё': 'e', 'һ': 'h', 'і': 'i', 'ї': 'i', 'ј': 'j', 'к': 'k', 'м': 'm', 'н': 'h', 'о': 'o', 'р': 'p',
	'с': 'c', 'т': 't', 'у': 'y', 'х': 'x', 'ѕ': 's', 'ԁ': 'd', 'ԛ': 'q', 'ԝ': 'w', 'ɡ': 'g',
	'А': 'A', 'В': 'B', 'Е': 'E', 'К': 'K', 'М': 'M', 'Н': 'H', 'О': 'O', 'Р': 'P', 'С': 'C', 'Т': 'T', 'Х': 'X', 'І': 'I', 'Ј': 'J', 'Ѕ': 'S',
	'α': 'a', 'ο': 'o', 'ρ': 'p', 'ν': 'v', 'ι': 'i', 'κ': 'k', 'τ': 't', 'υ': 'u', 'ε': 'e',
	'Α': 'A', 'Β': 'B', 'Ε': 'E', 'Ζ': 'Z', 'Η': 'H', 'Ι': 'I', 'Κ': 'K', 'Μ': 'M', 'Ν': 'N', 'Ο': 'O', 'Ρ': 'P', 'Τ': 'T', 'Υ': 'Y', 'Χ': 'X',
}

// maxDecodedRuns bounds the encoded runs decoded in one string.
const maxDecodedRuns = 16

// encodedRuns returns the runs of s that may be base64 (24 characters or
// more of its alphabets, with padding), hex (32 digits or more) or
// percent-escapes (6 or more), scanning s once.
func encodedRuns(s string) (b64, hexes, percents []string) {
	isB64 := func(c byte) bool {
		return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '+' || c == '/' || c == '_' || c == '-'
	}
	isHex := func(c byte) bool { return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' }
	for i := 0; i < len(s) && len(b64)+len(hexes)+len(percents) < maxDecodedRuns; {
		switch {
		case s[i] == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]):
			j := i
			for j+2 < len(s) && s[j] == '%' && isHex(s[j+1]) && isHex(s[j+2]) {
				j += 3
			}
			if (j-i)/3 >= 6 {
				percents = append(percents, s[i:j])
			}
			i = j
		case isB64(s[i]):
			j, allHex := i, true
			for j < len(s) && isB64(s[j]) {
				allHex = allHex && isHex(s[j])
				j++
			}
			k := j
			for k < len(s) && k-j < 2 && s[k] == '=' {
				k++
			}
			switch {
			case allHex && j-i >= 32 && (j-i)%2 == 0:
				hexes = append(hexes, s[i:j])
			case j-i >= 24:
				b64 = append(b64, s[i:k])
			}
			i = k
		default:
			i++
		}
	}
	return b64, hexes, percents
}

// decodedRuns returns the text hidden in encoded runs of s: those that
// decode to readable words (not to an image, a hash or a key).
func decodedRuns(s string) []string {
	var out []string
	try := func(b []byte, err error) {
		if err == nil && len(out) < maxDecodedRuns && printable(string(b)) && len(strings.Fields(string(b))) >= 3 {
			out = append(out, string(b))
		}
	}
	b64, hexes, percents := encodedRuns(s)
	for _, run := range b64 {
		enc := base64.StdEncoding
		if strings.ContainsAny(run, "-_") {
			enc = base64.URLEncoding
		}
		try(enc.WithPadding(base64.NoPadding).DecodeString(strings.TrimRight(run, "=")))
	}
	for _, run := range hexes {
		try(hex.DecodeString(run))
	}
	for _, run := range percents {
		b := make([]byte, 0, len(run)/3)
		for i := 0; i+3 <= len(run); i += 3 {
			c, _ := hex.DecodeString(run[i+1 : i+3])
			b = append(b, c...)
		}
		try(b, nil)
	}
	return out
}

// printable says whether s is mostly readable text.
func printable(s string) bool {
	if !utf8.ValidString(s) || s == "" {
		return false
	}
	good, all := 0, 0
	for _, r := range s {
		all++
		if unicode.IsPrint(r) || r == '\n' || r == '\t' {
			good++
		}
	}
	return good*10 >= all*9
}

func findingsReason(f []string) string {
	if len(f) == 0 {
		return ""
	}
	return "the definition " + strings.Join(f, "; ")
}
