import Foundation
import Grammar
@testable import OpenAI
import Testing

/// /v1/messages bodies become the chat request they equal; refusals name the field.
@Suite struct MessagesRequestTests {
    private func parse(_ body: String, countOnly: Bool = false) throws -> MessagesRequest {
        try MessagesRequest.parse(Data(body.utf8), countOnly: countOnly)
    }

    private func error(_ body: String, countOnly: Bool = false) -> OpenAIError? {
        do {
            _ = try parse(body, countOnly: countOnly)
            return nil
        } catch {
            return error as? OpenAIError
        }
    }

    @Test func conversationMapsToChatMessages() throws {
        let m = try parse("""
        {"model": "m", "max_tokens": 9, "system": [{"type": "text", "text": "Be "}, {"type": "text", "text": "brief."}],
         "stop_sequences": ["END"], "temperature": 0, "stream": true,
         "messages": [
           {"role": "user", "content": "weather?"},
           {"role": "assistant", "content": [{"type": "text", "text": "Let me look."}, {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}]},
           {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "Sunny"}]}, {"type": "text", "text": "thanks"}]}],
         "tools": [{"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
         "tool_choice": {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": true}}
        """)
        #expect(m.stream)
        let r = m.chat
        #expect(r.maxTokens == 9 && r.stop == ["END"] && r.temperature == 0 && r.speculation)
        #expect(r.prompts == [.chat([
            APIMessage(role: "system", content: "Be brief."),
            APIMessage(role: "user", content: "weather?"),
            APIMessage(role: "assistant", content: "Let me look.",
                       toolCalls: [APIToolCall(id: "toolu_1", name: "get_weather", arguments: #"{"city": "Paris"}"#)]),
            APIMessage(role: "tool", content: "Sunny", toolCallID: "toolu_1"),
            APIMessage(role: "user", content: "thanks"),
        ])])
        #expect(r.toolChoice == .function("get_weather") && !r.parallelToolCalls && r.outputGrammar != nil)
    }

    @Test(arguments: [("auto", ToolChoice.auto), ("any", .required), ("none", .none)])
    func toolChoiceIsHonoured(type: String, expected: ToolChoice) throws {
        let r = try parse("""
        {"model": "m", "max_tokens": 9, "messages": [{"role": "user", "content": "x"}], "tool_choice": {"type": "\(type)"},
         "tools": [{"name": "f", "input_schema": {"type": "object"}}]}
        """).chat
        #expect(r.toolChoice == expected)
        #expect((r.outputGrammar != nil) == (expected != .none))
    }

    @Test(arguments: [
        (#"{"model": "m", "messages": [{"role": "user", "content": "x"}]}"#, "max_tokens"),
        (#"{"model": "m", "max_tokens": 4, "messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}]}"#, "messages[0].content[0]"),
        (#"{"model": "m", "max_tokens": 4, "messages": [{"role": "system", "content": "x"}]}"#, "messages[0].role"),
        (#"{"model": "m", "max_tokens": 4, "messages": [{"role": "user", "content": [{"type": "tool_use", "id": "a", "name": "f", "input": {}}]}]}"#, "messages[0].content[0].type"),
        (#"{"model": "m", "max_tokens": 4, "messages": [{"role": "user", "content": "x"}], "temperature": 1.5}"#, "temperature"),
        (#"{"model": "m", "max_tokens": 4, "messages": [{"role": "user", "content": "x"}], "stop_sequences": ["a", ""]}"#, "stop_sequences[1]"),
        (#"{"model": "m", "max_tokens": 4, "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "web_search_20250305", "name": "web_search"}]}"#, "tools[0].type"),
        (#"{"model": "m", "max_tokens": 4, "messages": [{"role": "user", "content": "x"}], "tools": [{"name": "f"}]}"#, "tools[0].input_schema"),
        (#"{"model": "m", "max_tokens": 4, "messages": [{"role": "user", "content": "x"}], "tools": [{"name": "f", "input_schema": {"type": "object"}}], "tool_choice": {"type": "tool", "name": "g"}}"#, "tool_choice.name"),
        (#"{"model": "m", "max_tokens": 4, "messages": [{"role": "user", "content": "x"}], "thinking": {"type": "enabled"}}"#, "thinking.budget_tokens"),
        (#"{"model": "m", "max_tokens": 4096, "messages": [{"role": "user", "content": "x"}], "thinking": {"type": "enabled", "budget_tokens": 1023}}"#, "thinking.budget_tokens"),
        (#"{"model": "m", "max_tokens": 2048, "messages": [{"role": "user", "content": "x"}], "thinking": {"type": "enabled", "budget_tokens": 2048}}"#, "thinking.budget_tokens"),
        (#"{"model": "m", "max_tokens": 4096, "messages": [{"role": "user", "content": "x"}], "thinking": {"type": "enabled", "budget_tokens": 1024.5}}"#, "thinking.budget_tokens"),
        (#"{"model": "m", "max_tokens": 4, "messages": [{"role": "user", "content": "x"}], "thinking": {"type": "adaptive"}}"#, "thinking.type"),
        (#"{"model": "m", "max_tokens": 4, "messages": [{"role": "user", "content": "x"}], "thinking": {"type": "disabled", "budget_tokens": 1024}}"#, "thinking.budget_tokens"),
        (#"{"model": "m", "max_tokens": 4, "messages": [{"role": "user", "content": "x"}], "thinking": true}"#, "thinking"),
        (#"{"model": "m", "max_tokens": 4, "messages": [{"role": "user", "content": "x"}], "n": 2}"#, "n"),
    ])
    func refusalsNameTheField(body: String, param: String) {
        let e = error(body)
        #expect(e?.status == .badRequest)
        #expect(e?.param == param, "\(String(describing: e))")
    }

    @Test func thinkingIsTheTemplatesEnableThinking() throws {
        let ask = #""model": "m", "max_tokens": 2048, "messages": [{"role": "user", "content": "x"}]"#
        let on = try parse("{\(ask), \"thinking\": {\"type\": \"enabled\", \"budget_tokens\": 1024}}").chat
        #expect(on.templateContext.map(\.0) == ["enable_thinking"] && on.templateContext.first?.1 == .bool(true))
        #expect(on.enableThinkingParam == "thinking")
        let off = try parse("{\(ask), \"thinking\": {\"type\": \"disabled\"}}").chat
        #expect(off.templateContext.first?.1 == .bool(false) && off.enableThinkingParam == "thinking")
        let none = try parse("{\(ask)}").chat
        #expect(none.templateContext.isEmpty && none.enableThinkingParam == nil)
        // count_tokens has no max_tokens to compare the budget with.
        let counted = try parse(#"{"model": "m", "messages": [{"role": "user", "content": "x"}], "thinking": {"type": "enabled", "budget_tokens": 5000}}"#, countOnly: true)
        #expect(counted.chat.templateContext.first?.1 == .bool(true))
    }

    @Test func countTokensNeedsNoMaxTokensAndRefusesGenerationFields() throws {
        _ = try parse(#"{"model": "m", "messages": [{"role": "user", "content": "x"}]}"#, countOnly: true)
        #expect(error(#"{"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": true}"#, countOnly: true)?.param == "stream")
    }

    @Test func anthropicErrorShape() throws {
        let response = AnthropicError.response(OpenAIError.modelNotFound("claude-x", available: ["m"]))
        #expect(response.status.code == 404)
        let body = try JSONValue.parse(String(decoding: response.body, as: UTF8.self))
        #expect(body["type"] == .string("error"))
        #expect(body["error"]?["type"] == .string("not_found_error"))
        #expect(body["error"]?["message"]?.stringValue?.contains("claude-x") == true)
    }
}
