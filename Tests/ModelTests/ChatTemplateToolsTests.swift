import Model
import Testing
import ChatTemplate

/// Tool definitions and tool-call history reach templates that render them (Hermes-style, as
/// Qwen 2.5's template does), and `supportsTools` tells such templates apart.
@Suite struct ChatTemplateToolsTests {
    static let hermes = """
    {%- if tools %}<|im_start|>system
    # Tools
    {%- for tool in tools %}
    {{ tool.function.name }}: {{ tool.function.description }} ({{ tool.function.parameters.properties | list | join(", ") }})
    {%- endfor %}<|im_end|>
    {% endif %}
    {%- for message in messages %}
    {%- if message.role == "assistant" and message.tool_calls %}<|im_start|>assistant
    {%- for call in message.tool_calls %}
    <tool_call>{{ call.function.name }} {{ call.function.arguments.city }} {{ call.id }}</tool_call>
    {%- endfor %}<|im_end|>
    {% elif message.role == "tool" %}<|im_start|>tool
    {{ message.tool_call_id }}: {{ message.content }}<|im_end|>
    {% else %}<|im_start|>{{ message.role }}
    {{ message.content }}<|im_end|>
    {% endif %}
    {%- endfor %}
    """

    @Test func toolsAndToolCallsRender() throws {
        let template = try ChatTemplate(source: Self.hermes)
        #expect(template.supportsTools)
        let tools: [TemplateValue] = [.object([("type", .string("function")), ("function", .object([
            ("name", .string("get_weather")), ("description", .string("Weather of a city")),
            ("parameters", .object([("type", .string("object")), ("properties", .object([("city", .object([("type", .string("string"))]))]))])),
        ]))])]
        let call: TemplateValue = .object([("id", .string("call_1")), ("type", .string("function")),
                                           ("function", .object([("name", .string("get_weather")), ("arguments", .object([("city", .string("Oslo"))]))]))])
        let messages = [
            ChatMessage(role: "user", content: "Weather in Oslo?"),
            ChatMessage(role: "assistant", content: "", extra: [("tool_calls", .list([call]))]),
            ChatMessage(role: "tool", content: "sunny", extra: [("tool_call_id", .string("call_1"))]),
        ]
        let text = try template.render(messages: messages, addGenerationPrompt: false, tools: tools)
        #expect(text.contains("get_weather: Weather of a city (city)"))
        #expect(text.contains("<tool_call>get_weather Oslo call_1</tool_call>"))
        #expect(text.contains("call_1: sunny"))
        // Without tools the block is left out.
        #expect(!(try template.render(messages: [messages[0]], addGenerationPrompt: false)).contains("# Tools"))
    }

    @Test func plainTemplatesDoNotSupportTools() throws {
        let chatml = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
        #expect(!(try ChatTemplate(source: chatml)).supportsTools)
    }
}
