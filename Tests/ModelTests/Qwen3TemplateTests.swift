import ChatTemplate
import Foundation
import Grammar
import Testing

// MARK: - Qwen3's chat template against jinja2

/// The real Qwen3 chat template (Tests/Fixtures/qwen3_chat_template.jinja, from Qwen/Qwen3-0.6B)
/// rendered by ChatTemplate, against Python jinja2's renders with transformers' settings
/// (tools/reference/gen_qwen3_template.py writes Tests/Fixtures/qwen3_template_renders.json):
/// thinking on, off and unset (`enable_thinking` through the render context), history with
/// reasoning, tool calls and tool results.
@Suite struct Qwen3TemplateTests {
    struct Case: CustomStringConvertible, Sendable {
        var conversation: String
        var messages: [ChatMessage]
        var tools: [TemplateValue]?
        var context: [(String, TemplateValue)]
        var addGenerationPrompt: Bool
        var expected: String
        var description: String { "\(conversation) \(context.map { "\($0.0)=\($0.1)" }) generation prompt \(addGenerationPrompt)" }
    }

    static func value(_ v: JSONValue) -> TemplateValue {
        switch v {
        case .null: return .null
        case .bool(let b): return .bool(b)
        case .number(let n): return Int(n).map { .integer($0) } ?? .double(Double(n) ?? 0)
        case .string(let s): return .string(s)
        case .array(let items): return .list(items.map(value))
        case .object(let members): return .object(members.map { ($0.0, value($0.1)) })
        }
    }

    static func source() throws -> String {
        String(decoding: try TestSupport.fixture("qwen3_chat_template.jinja"), as: UTF8.self)
    }

    static let cases: [Case] = {
        guard let data = try? TestSupport.fixture("qwen3_template_renders.json"),
              case .array(let items)? = try? JSONValue.parse(String(decoding: data, as: UTF8.self))["cases"] else { return [] }
        return items.map { c in
            let messages: [ChatMessage]
            if case .array(let list)? = c["messages"] {
                messages = list.map { m in
                    guard case .object(let members) = m else { return ChatMessage(role: "", content: "") }
                    let extra = members.filter { !["role", "content"].contains($0.0) }.map { ($0.0, value($0.1)) }
                    return ChatMessage(role: m["role"]?.stringValue ?? "", content: m["content"]?.stringValue ?? "", extra: extra)
                }
            } else {
                messages = []
            }
            var tools: [TemplateValue]?
            if case .array(let list)? = c["tools"] { tools = list.map(value) }
            var context: [(String, TemplateValue)] = []
            if case .object(let members)? = c["kwargs"] { context = members.map { ($0.0, value($0.1)) } }
            return Case(conversation: c["conversation"]?.stringValue ?? "", messages: messages, tools: tools, context: context,
                        addGenerationPrompt: c["add_generation_prompt"] == .bool(true), expected: c["expected"]?.stringValue ?? "")
        }
    }()

    @Test func fixtureIsPresent() {
        #expect(Self.cases.count == 17, "Tests/Fixtures/qwen3_template_renders.json: run tools/reference/gen_qwen3_template.py")
    }

    @Test(arguments: cases)
    func rendersLikeJinja2(_ c: Case) throws {
        let template = try ChatTemplate(source: Self.source())
        let output = try template.render(messages: c.messages, addGenerationPrompt: c.addGenerationPrompt, bosToken: "",
                                         eosToken: "<|im_end|>", tools: c.tools, context: c.context)
        #expect(output == c.expected, "\(c)")
    }

    /// The template reads `enable_thinking` and writes think blocks; with thinking off its
    /// generation prompt closes an empty block, so the reply starts as content.
    @Test func thinkingSwitch() throws {
        let template = try ChatTemplate(source: Self.source())
        #expect(template.reads("enable_thinking"))
        #expect(!template.reads("reasoning_effort"))
        #expect(template.thinks)
        let messages = [ChatMessage(role: "user", content: "Hi")]
        let on = try template.render(messages: messages, addGenerationPrompt: true, context: [("enable_thinking", .bool(true))])
        let off = try template.render(messages: messages, addGenerationPrompt: true, context: [("enable_thinking", .bool(false))])
        #expect(on.hasSuffix("<|im_start|>assistant\n"))
        #expect(off.hasSuffix("<|im_start|>assistant\n<think>\n\n</think>\n\n"))
        #expect(!ReasoningSplitter.opensReasoning(prompt: on) && !ReasoningSplitter.opensReasoning(prompt: off))
        // A template that forces thinking (DeepSeek-R1's newer ones) opens the block in the prompt.
        let forced = try ChatTemplate(source: "{{ messages[0].content }}{% if add_generation_prompt %}<｜Assistant｜><think>\n{% endif %}")
        #expect(ReasoningSplitter.opensReasoning(prompt: try forced.render(messages: messages, addGenerationPrompt: true)))
    }

    /// Templates without think blocks or switches say so.
    @Test func chatMLTemplateNeitherThinksNorReadsTheSwitch() throws {
        let template = try ChatTemplate(source: RealChatTemplates.smollm2)
        #expect(!template.thinks)
        #expect(!template.reads("enable_thinking"))
        #expect(template.reads("messages") && template.reads("add_generation_prompt"))
    }
}
