import Model
import Testing
import ChatTemplate

// MARK: - Real templates against jinja2's renders

@Suite struct ChatTemplateRealTests {
    @Test(arguments: RealChatTemplates.cases)
    func rendersLikeJinja2(_ c: RealChatTemplates.Case) throws {
        let template = try ChatTemplate(source: c.template)
        let messages = c.withSystem ? RealChatTemplates.withSystem : RealChatTemplates.noSystem
        let render = { () throws(ChatTemplateError) -> String in
            try template.render(messages: messages, addGenerationPrompt: c.addGenerationPrompt, bosToken: "<s>", eosToken: "</s>")
        }
        switch c.expected {
        case .success(let expected):
            let output = try render()
            #expect(output == expected)
        case .failure(.raised(let message, _)):
            do {
                let output = try render()
                Issue.record("expected raise_exception(\"\(message)\"), got output \(String(reflecting: output))")
            } catch .raised(let got, _) {
                #expect(got == message)
            } catch {
                Issue.record("expected raise_exception(\"\(message)\"), got \(error)")
            }
        case .failure(let other):
            Issue.record("unexpected case \(other)")
        }
    }

    @Test func defaultModelTemplateIsChatML() throws {
        let template = try ChatTemplate(gguf: TokenizerTestSupport.modelFile())
        let prompt = try template.render(
            messages: [ChatMessage(role: "system", content: "Be brief."), ChatMessage(role: "user", content: "Hi!")],
            addGenerationPrompt: true)
        #expect(prompt == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n")
        let withoutSystem = try template.render(messages: [ChatMessage(role: "user", content: "Hi!")], addGenerationPrompt: false)
        #expect(withoutSystem == "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
            + "<|im_start|>user\nHi!<|im_end|>\n")
        // The rendered prompt encodes to the fixture's ids for the same text.
        let tokenizer = try TokenizerTestSupport.defaultTokenizer()
        let ids = tokenizer.encode(prompt, parseSpecial: true)
        #expect(ids.first == 1 && ids.filter { $0 == 2 }.count == 2)
    }
}

// MARK: - Constructs

@Suite struct ChatTemplateConstructTests {
    func render(_ source: String, _ messages: [ChatMessage] = [], generation: Bool = false) throws -> String {
        try ChatTemplate(source: source).render(messages: messages, addGenerationPrompt: generation, bosToken: "<s>", eosToken: "</s>")
    }

    let two = [ChatMessage(role: "user", content: "a"), ChatMessage(role: "assistant", content: "b")]

    @Test func loopVariables() throws {
        #expect(try render("{% for m in messages %}{{ loop.index }}/{{ loop.length }}{{ m.role[0] }}{% if loop.first %}F{% endif %}{% if loop.last %}L{% endif %}{{ loop.index0 }} {% endfor %}", two)
            == "1/2uF0 2/2aL1 ")
        #expect(try render("{% for x in [] %}x{% else %}empty{% endfor %}") == "empty")
        #expect(try render("{% for x in [1,2,3,4] if x is even %}{{ x }}{% endfor %}") == "24")
        #expect(try render("{% for x in range(5) %}{% if x == 3 %}{% break %}{% endif %}{% if x == 1 %}{% continue %}{% endif %}{{ x }}{% endfor %}") == "02")
        #expect(try render("{% for k, v in {'a': 1, 'b': [2]}.items() %}{{ k }}={{ v }};{% endfor %}") == "a=1;b=[2];")
    }

    @Test func whitespaceControl() throws {
        // trim_blocks removes the newline after a block tag, lstrip_blocks the indentation before it.
        #expect(try render("{% if true %}\n    yes\n    {% endif %}\nend") == "    yes\nend")
        #expect(try render("a  {{- 'b' -}}  c") == "abc")
        #expect(try render("a\n  {%- if true -%}\n  b  \n{%- endif %}") == "ab")
        #expect(try render("{{ 'x' }}\n") == "x")  // one trailing newline of the source is dropped
        #expect(try render("{# comment #}\nx") == "x")
    }

    @Test func scopingAndNamespace() throws {
        #expect(try render("{% set x = 1 %}{% for i in [1] %}{% set x = 2 %}{% endfor %}{{ x }}") == "1")
        #expect(try render("{% set ns = namespace(x=1) %}{% for i in [1,2] %}{% set ns.x = ns.x + i %}{% endfor %}{{ ns.x }}") == "4")
        #expect(try render("{% set block %}in{{ 1 + 1 }}{% endset %}[{{ block }}]") == "[in2]")
    }

    @Test func expressions() throws {
        #expect(try render("{{ 1 + 2 * 3 }} {{ 7 // 2 }} {{ 7 / 2 }} {{ -7 % 3 }} {{ 2 ** 3 }}") == "7 3 3.5 2 8")
        #expect(try render("{{ 'a' ~ 1 ~ none }} {{ 'ab' + 'c' }} {{ [1] + [2] }}") == "a1None abc [1, 2]")
        #expect(try render("{{ 'x' if false else 'y' }}{{ 'z' if false }}") == "y")
        #expect(try render("{{ messages[1:] | length }} {{ messages[-1]['content'] }} {{ 'hello'[1:3] }} {{ [1,2,3][::-1] }}", two) == "1 b el [3, 2, 1]")
        #expect(try render("{{ 1 < 2 < 3 }} {{ 'a' in 'cat' }} {{ 3 not in [1, 2] }} {{ not none }} {{ none or 'd' }} {{ 0 and 1 }}")
            == "True True True True d 0")
        #expect(try render("{{ {'k': 'v'}['k'] }}{{ {'k': 'v'}.k }}{{ missing.attr }}{{ messages[5] }}", two) == "vv")
        #expect(try render("{{ 1.5 }} {{ 2.0 }} {{ true }} {{ 'it''s' }}") == "1.5 2.0 True its")
    }

    @Test func filters() throws {
        #expect(try render("{{ '  x  ' | trim }}|{{ 'aB' | upper }}|{{ 'aB' | lower }}|{{ 'hello world' | capitalize }}|{{ 'hello world' | title }}")
            == "x|AB|ab|Hello world|Hello World")
        #expect(try render("{{ [1, 2] | length }} {{ 'abc' | length }} {{ [3, 4] | first }} {{ [3, 4] | last }} {{ ['a', 'b'] | join(', ') }}")
            == "2 3 3 4 a, b")
        #expect(try render("{{ undefined_name | default('dflt') }} {{ '' | default('e', true) }} {{ 'a-b' | replace('-', '+') }} {{ 5 | string }}")
            == "dflt e a+b 5")
        #expect(try render(#"{{ {"a": [1, "é\n"], "b": none, "c": true} | tojson }}"#) == #"{"a": [1, "é\n"], "b": null, "c": true}"#)
        #expect(try render("{{ {'a': [1]} | tojson(indent=2) }}") == "{\n  \"a\": [\n    1\n  ]\n}")
        #expect(try render("{{ messages | selectattr('role', 'equalto', 'user') | list | length }}{{ messages | map(attribute='content') | join }}", two)
            == "1ab")
    }

    @Test func tests() throws {
        #expect(try render("{{ x is defined }} {{ x is not defined }} {{ none is none }} {{ 'a' is string }} {{ 3 is divisibleby 3 }} {{ {} is mapping }}")
            == "False True True True True True")
    }

    @Test func methods() throws {
        #expect(try render("{{ '  a '.strip() }}|{{ 'a,b'.split(',') }}|{{ 'abc'.startswith('ab') }}|{{ {'k': 1}.get('z', 2) }}")
            == "a|['a', 'b']|True|2")
    }

    @Test func raiseExceptionIsTyped() throws {
        #expect(throws: ChatTemplateError.raised(message: "no system", line: 2)) {
            try render("x\n{% if messages[0].role == 'user' %}{{ raise_exception('no system') }}{% endif %}", two)
        }
    }

    @Test func unsupportedConstructsNameTheirLine() throws {
        #expect(throws: ChatTemplateError.unsupported(construct: "{% macro %}", line: 3)) {
            try ChatTemplate(source: "a\nb\n{% macro m() %}x{% endmacro %}")
        }
        #expect(throws: ChatTemplateError.unsupported(construct: "filter \"wordwrap\"", line: 1)) {
            try render("{{ 'a' | wordwrap }}")
        }
        #expect(throws: ChatTemplateError.unsupported(construct: "function \"cycler\"", line: 1)) {
            try render("{{ cycler() }}")
        }
        let description = ChatTemplateError.unsupported(construct: "{% macro %}", line: 3).description
        #expect(description.contains("line 3") && description.contains("macro"))
    }

    @Test func syntaxErrorsNameTheirLine() {
        #expect(throws: ChatTemplateError.self) { try ChatTemplate(source: "{% if x %}no end") }
        do {
            _ = try ChatTemplate(source: "ok\n{{ 1 + }}")
            Issue.record("expected a syntax error")
        } catch {
            guard case .syntax(let line, _) = error else { Issue.record("wrong error \(error)"); return }
            #expect(line == 2)
        }
        #expect(throws: ChatTemplateError.self) { try ChatTemplate(source: "{{ 'unterminated }}") }
    }

    @Test func typeErrorsAreTyped() {
        #expect(throws: ChatTemplateError.type(message: "unsupported operand types for +: string and int", line: 1)) {
            try render("{{ 'a' + 1 }}")
        }
    }
}
