"""Alignment (survey section 5.3): bias heads, unwanted (toxic / negative) directions, lying heads.

    from uncover.applications.alignment.bias import bias_heads
    from uncover.applications.alignment.toxic import unwanted_directions
"""
